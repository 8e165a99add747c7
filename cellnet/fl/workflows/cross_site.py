"""CrossSiteEval: every site's model (and optionally the server's) evaluated on every site.

Step 1 asks each site for its local model (``submit_model`` task); each
arriving model is written to ``<job workspace>/cross_site_models/`` at once,
so the server holds one model at a time.  Step 2 sends each model in turn,
with ``meta[model_owner]``, as a ``validate`` task to every site; a site
answers with a METRICS DXO.  The job's results get a table
``{model owner: {validating site: {metric: value}}}`` (a failed evaluation
is ``{"error": return code}``) and the same table as text for one metric.
Server models join the rows: the persistor's model (``server``) and/or
saved ones by name (``server_models``: ``["final", "best"]`` of a FedAvg run
earlier in the same job, read from ``<job workspace>/models/``).
No model at all ends the job with a reason naming every site's failure.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import trio

from cellnet.errors import JobError
from cellnet.fl.dxo import DXO, DataKind
from cellnet.fl.persistor import NPModelPersistor, load_npz
from cellnet.fl.runtime.context import FLContext
from cellnet.fl.runtime.controller import Controller, Task, TaskResult
from cellnet.fl.workflows import _common as C
from cellnet.fl.workflows._progress import report_progress
from cellnet.fl.workflows.constants import DEFAULT_TASK_TIMEOUT, AppConstants

__all__ = ["CrossSiteEval", "format_table"]

SERVER_MODEL = "server"


def format_table(table: dict[str, dict[str, dict[str, Any]]], metric: str | None) -> str:
    """Rows: model owners; columns: validating sites; cells: ``metric`` (or the error)."""
    sites = sorted({s for row in table.values() for s in row})
    head = ["model \\ site", *sites]
    rows = [head]
    for owner, row in table.items():
        cells = [owner]
        for s in sites:
            entry = row.get(s, {})
            if "error" in entry:
                cells.append(str(entry["error"]))
            elif metric is not None and metric in entry:
                cells.append(f"{entry[metric]:.4f}")
            else:
                cells.append(", ".join(f"{k}={v:.4g}" for k, v in sorted(entry.items())) or "-")
        rows.append(cells)
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
                     for r in rows)


class CrossSiteEval(Controller):
    """Cross-site model evaluation (see the module docstring)."""

    def __init__(self, submit_model_task_name: str = AppConstants.TASK_SUBMIT_MODEL,
                 validation_task_name: str = AppConstants.TASK_VALIDATION,
                 submit_model_timeout: float = DEFAULT_TASK_TIMEOUT,
                 validation_timeout: float = DEFAULT_TASK_TIMEOUT,
                 persistor: Any = None, metric: str | None = None,
                 server_models: list[str] | None = None, models_dir: str = "models") -> None:
        self.submit_task = C.check_name(submit_model_task_name, "submit_model_task_name")
        self.validate_task = C.check_name(validation_task_name, "validation_task_name")
        self.submit_timeout = C.check_seconds(submit_model_timeout, "submit_model_timeout")
        self.validation_timeout = C.check_seconds(validation_timeout, "validation_timeout")
        self.persistor_spec, self.metric = persistor, metric
        if server_models is not None and (not isinstance(server_models, list) or not all(
                isinstance(n, str) and n and "/" not in n for n in server_models)):
            raise JobError(f"server_models must be a list of model names, got {server_models!r}")
        self.server_models, self.models_dir = list(server_models or []), models_dir

    async def _collect(self, fl_ctx: FLContext, store: NPModelPersistor) -> dict[str, Any]:
        paths: dict[str, str] = {}
        workspace = C.workspace(self.engine)

        async def received(result: TaskResult) -> TaskResult | None:
            dxo = result.dxo
            if not result.ok or dxo is None:
                return None
            if dxo.kind != DataKind.WEIGHTS or not dxo.data:
                return TaskResult(result.client, "EXECUTION_RESULT_ERROR", None,
                                  f"submitted {dxo.kind} with {len(dxo.data)} arrays, "
                                  "not a model (WEIGHTS)")
            try:
                path = await trio.to_thread.run_sync(store.save, dxo.data, result.client,
                                                     workspace)
            except JobError as exc:
                return TaskResult(result.client, "EXECUTION_RESULT_ERROR", None, str(exc))
            paths[result.client] = str(path)
            return None

        task = Task(self.submit_task, DXO(DataKind.WEIGHTS, {}, {}), timeout=self.submit_timeout)
        results = await self.broadcast_and_wait(task, fl_ctx=fl_ctx, result_received_cb=received)
        errors = {n: r.rc for n, r in results.items() if not r.ok}
        return {"paths": paths, "errors": errors, "text": C.failure_text(results)}

    async def _evaluate(self, owner: str, model: dict[str, np.ndarray],
                        fl_ctx: FLContext) -> dict[str, dict[str, Any]]:
        task = Task(self.validate_task,
                    DXO(DataKind.WEIGHTS, model, {AppConstants.MODEL_OWNER: owner}),
                    timeout=self.validation_timeout)
        row: dict[str, dict[str, Any]] = {}
        for site, r in (await self.broadcast_and_wait(task, fl_ctx=fl_ctx)).items():
            if not r.ok or r.dxo is None:
                row[site] = {"error": r.rc}
            elif r.dxo.kind != DataKind.METRICS:
                row[site] = {"error": f"sent {r.dxo.kind}, not METRICS"}
            else:
                row[site] = {k: float(np.asarray(v).reshape(-1)[0]) if np.asarray(v).size
                             else float("nan") for k, v in r.dxo.data.items()}
        return row

    async def control_flow(self, fl_ctx: FLContext) -> dict[str, Any]:
        store = NPModelPersistor(arrays={"unused": [0.0]}, save_dir="cross_site_models")
        collected = await self._collect(fl_ctx, store)
        owners: list[tuple[str, Any]] = [(s, collected["paths"][s]) for s in self.clients
                                         if s in collected["paths"]]
        if self.persistor_spec is not None:
            persistor = C.make_persistor(self.persistor_spec, self.engine.app_dir)
            owners.append((SERVER_MODEL, persistor))
        for name in self.server_models:  # e.g. "final", "best" of a FedAvg run before this
            path = C.workspace(self.engine) / self.models_dir / f"{name}.npz"
            if not path.is_file():
                raise JobError(f"cross-site evaluation: server model {name!r} not found "
                               f"({path})")
            owners.append((f"{SERVER_MODEL}:{name}", str(path)))
        if not owners:
            raise JobError(f"cross-site evaluation: no site submitted a model; "
                           f"{collected['text']}")
        table: dict[str, dict[str, dict[str, Any]]] = {}
        for k, (owner, source) in enumerate(owners):
            await report_progress(self.engine, {
                "workflow": type(self).__name__, "round": k, "rounds_done": k,
                "num_rounds": len(owners), "sites_answered": 0,
                "sites_total": len(self.clients), "metrics": {}, "model": owner,
                "unit": "models evaluated"})
            if isinstance(source, str):
                model = await trio.to_thread.run_sync(load_npz, source)
            else:
                model = source.load_initial(self.engine.app_dir)
            table[owner] = await self._evaluate(owner, model, fl_ctx)
            del model
        await report_progress(self.engine, {
            "workflow": type(self).__name__, "round": len(owners) - 1,
            "rounds_done": len(owners), "num_rounds": len(owners),
            "sites_answered": len(self.clients), "sites_total": len(self.clients),
            "metrics": {}, "unit": "models evaluated"})
        return {AppConstants.CROSS_SITE_EVAL.value: {
            "models": [o for o, _ in owners], "sites": list(self.clients), "table": table,
            "metric": self.metric, "text": format_table(table, self.metric),
            "submit_errors": collected["errors"]}}
