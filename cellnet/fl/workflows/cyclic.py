"""CyclicWorkflow: the model travels site to site, each training it further, for N rounds.

Each round visits the sites in order (``order``: ``"fixed"`` as listed in
the job, or ``"random"``, reshuffled each round with ``seed``); a visit is a
``train`` task holding the current model (meta: ``current_round``,
``total_round``) and its WEIGHTS (or WEIGHT_DIFF) result is the next site's
model.  A site that fails its visit ends the job at once with a reason
naming it, rather than waiting out the other sites' timeouts with a stale
model.  The persistor gives the initial model and keeps each round's and
the final model.
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any

import trio

from cellnet.defs import MetaKey
from cellnet.errors import JobError
from cellnet.fl.dxo import DXO, DataKind
from cellnet.fl.runtime.context import FLContext
from cellnet.fl.runtime.controller import Controller, Task
from cellnet.fl.workflows import _common as C
from cellnet.fl.workflows._progress import report_progress
from cellnet.fl.workflows.constants import DEFAULT_TASK_TIMEOUT, AppConstants

__all__ = ["CyclicWorkflow"]


class CyclicWorkflow(Controller):
    """Cyclic weight transfer (see the module docstring)."""

    def __init__(self, num_rounds: int = 3, task_name: str = AppConstants.TASK_TRAIN,
                 task_timeout: float = DEFAULT_TASK_TIMEOUT, persistor: Any = None,
                 order: str = "fixed", seed: int | None = None) -> None:
        self.num_rounds = C.check_int(num_rounds, "num_rounds", 1)
        self.task_name = C.check_name(task_name, "task_name")
        self.task_timeout = C.check_seconds(task_timeout, "task_timeout")
        C.need_persistor(persistor, "CyclicWorkflow")
        if order not in ("fixed", "random"):
            raise JobError(f"order must be 'fixed' or 'random', got {order!r}")
        self.persistor_spec, self.order = persistor, order
        self.rng = random.Random(seed)
        self.history: list[dict[str, Any]] = []

    async def control_flow(self, fl_ctx: FLContext) -> dict[str, Any]:
        persistor = C.make_persistor(self.persistor_spec, self.engine.app_dir)
        model = persistor.load_initial(self.engine.app_dir)
        ws = C.workspace(self.engine)
        self.history = []
        for rnd in range(self.num_rounds):
            sites = list(self.clients)
            if self.order == "random":
                self.rng.shuffle(sites)
            t0 = time.perf_counter()
            for k, site in enumerate(sites):
                await report_progress(self.engine, {
                    "workflow": type(self).__name__, "round": rnd, "rounds_done": rnd,
                    "num_rounds": self.num_rounds, "sites_answered": k,
                    "sites_total": len(sites), "metrics": {}, "site": site})
                meta = {MetaKey.CURRENT_ROUND: rnd, MetaKey.TOTAL_ROUND: self.num_rounds,
                        AppConstants.NUM_ROUNDS: self.num_rounds}
                task = Task(self.task_name, DXO(DataKind.WEIGHTS, model, meta),
                            timeout=self.task_timeout)
                result = await self.send_and_wait(task, site, fl_ctx)
                if not result.ok or result.dxo is None:
                    raise JobError(f"round {rnd}: {site} failed its turn: "
                                   f"{C.failure_text({site: result})}")
                if result.dxo.kind not in (DataKind.WEIGHTS, DataKind.WEIGHT_DIFF):
                    raise JobError(f"round {rnd}: {site} sent {result.dxo.kind}, not a model")
                model = await trio.to_thread.run_sync(C.apply_update, model, result.dxo)
            self.history.append({"round": rnd, "order": sites,
                                 "seconds": time.perf_counter() - t0})
            await trio.to_thread.run_sync(persistor.save_round, model, rnd, ws)
        await report_progress(self.engine, {
            "workflow": type(self).__name__, "round": self.num_rounds - 1,
            "rounds_done": self.num_rounds, "num_rounds": self.num_rounds,
            "sites_answered": len(self.clients), "sites_total": len(self.clients),
            "metrics": {}})
        final = await trio.to_thread.run_sync(persistor.save, model, "final", ws)
        return {"workflow": type(self).__name__, "rounds": self.history,
                "final_model": str(final), "model_dir": str(Path(final).parent)}
