"""ScatterAndGather: FedAvg rounds (send the global model, aggregate results in time, save).

Theory of operation.  The initial model comes from the persistor.  Each round
``r`` (``start_round`` .. ``num_rounds - 1``) broadcasts a ``train`` task
holding the global model (meta: ``current_round``, ``total_round``) and
folds every result into the aggregator **as it arrives** (the controller's
``result_received_cb``), so with FedAvg the server holds the global model,
the running sum and the result being folded, whatever the number of sites.
The wait ends when every site answered, or ``min_clients`` results were
accepted and ``wait_time_after_min_received`` more seconds passed, or the
train timeout expired.  A round with fewer than ``min_clients`` accepted
results raises :class:`~cellnet.errors.JobError` naming each missing site
and why, which ends the job with that reason instead of hanging.

In-place aggregation (``in_place=True``, the default for FedAvg without
``clip_norm``): the round opens a :class:`~cellnet.fl.runtime.inplace.ResultFold`
and each large result is folded into its accumulator **chunk by chunk as it
arrives** on the server job cell, never reassembled (small results, sent as
one frame, are folded whole); the weight is read from the result's pack
metadata, which precedes its data.  A result stream that breaks after
folding part of its update leaves that part in the sum, so the round is
gathered again from the sites whose results arrived whole (at most
``max_gather_attempts`` times) -- the average never holds a partial result.
With ``low_memory`` (in-place rounds without best-model selection; the
default ``"auto"`` turns it on for models of ``LOW_MEMORY_AUTO_BYTES``, 256 MiB,
and more) the
global model is spilled to the job workspace before it is sent and released
once every site has it, so the server holds little more than the running
sum while it waits; it is read back only when needed (a second gather, a
WEIGHT_DIFF or partial update).

Robust aggregators and ``clip_norm`` need whole updates, and server-side
result filters need whole DXOs: those rounds receive whole buffers (the
result of each is still folded and dropped on arrival).

Weights come from ``meta[NUM_STEPS_CURRENT_ROUND]`` of each result (1 when
absent).  Robust options: ``aggregator`` = ``fedavg`` | ``median`` |
``trimmed_mean`` (``trim`` per side), and ``clip_norm``: every update is made
a difference to the global model and scaled to L2 norm at most ``clip_norm``.
Best model: results may carry ``meta[initial_metrics]`` (the global model
they received, evaluated on the site's validation data); their weighted
mean of ``validation_metric`` scores the model sent that round, and the
best one is saved as ``best.npz``.
"""

from __future__ import annotations

import functools
import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import trio

from cellnet.defs import MetaKey, ReturnCode
from cellnet.errors import AggregationError, JobError
from cellnet.fl.aggregators import CoordinateMedian, InTimeFedAvg, TrimmedMean, update_norm
from cellnet.fl.dxo import DXO, DataKind
from cellnet.fl.runtime.context import FLContext
from cellnet.fl.runtime.controller import Controller, Task, TaskResult
from cellnet.fl.runtime.inplace import ResultFold, RoundAccumulator
from cellnet.fl.workflows import _common as C
from cellnet.fl.workflows._progress import report_progress
from cellnet.fl.workflows._spill import SpilledModel
from cellnet.fl.workflows.constants import DEFAULT_TASK_TIMEOUT, AppConstants

__all__ = ["AGGREGATORS", "ScatterAndGather"]

#: ``low_memory="auto"`` spills the sent model of rounds whose model is at least this big.
LOW_MEMORY_AUTO_BYTES = 256 << 20

AGGREGATORS = ("fedavg", "median", "trimmed_mean")
log = logging.getLogger("cellnet.fl.scatter_gather")
_REJECTED = "result rejected: "


def rejected_of(results: dict[str, TaskResult]) -> dict[str, str]:
    """``{site: reason}`` of the results the aggregation refused."""
    return {n: r.error[len(_REJECTED):] for n, r in results.items()
            if not r.ok and r.error and r.error.startswith(_REJECTED)}


class ScatterAndGather(Controller):
    """FedAvg workflow (see the module docstring); its args come from the job's server config."""

    def __init__(self, num_rounds: int = 5, start_round: int = 0, min_clients: int = 0,
                 wait_time_after_min_received: float = 10.0,
                 train_task_name: str = AppConstants.TASK_TRAIN,
                 train_timeout: float = DEFAULT_TASK_TIMEOUT, persistor: Any = None,
                 aggregator: str = "fedavg", trim: int = 1, clip_norm: float | None = None,
                 weights_key: str = MetaKey.NUM_STEPS_CURRENT_ROUND,
                 validation_metric: str | None = None, metric_mode: str = "max",
                 in_place: bool = True, max_gather_attempts: int = 3,
                 low_memory: bool | str = "auto") -> None:
        self.num_rounds = C.check_int(num_rounds, "num_rounds", 1)
        self.start_round = C.check_int(start_round, "start_round", 0)
        if self.start_round >= self.num_rounds:
            raise JobError(f"start_round ({start_round}) must be below num_rounds ({num_rounds})")
        self.min_clients = C.check_int(min_clients, "min_clients", 0)
        self.wait_after_min = C.check_seconds(wait_time_after_min_received,
                                              "wait_time_after_min_received", allow_zero=True)
        self.train_task_name = C.check_name(train_task_name, "train_task_name")
        self.train_timeout = C.check_seconds(train_timeout, "train_timeout")
        self.persistor_spec = C.need_persistor(persistor, "ScatterAndGather")
        if aggregator not in AGGREGATORS:
            raise JobError(f"aggregator must be one of {AGGREGATORS}, got {aggregator!r}")
        self.aggregator_name = aggregator
        self.trim = C.check_int(trim, "trim", 0)
        if clip_norm is not None and not (not isinstance(clip_norm, bool) and isinstance(
                clip_norm, int | float) and math.isfinite(clip_norm) and clip_norm > 0):
            raise JobError(f"clip_norm must be a positive number or null, got {clip_norm!r}")
        self.clip_norm = None if clip_norm is None else float(clip_norm)
        self.weights_key = weights_key
        if metric_mode not in ("max", "min"):
            raise JobError(f"metric_mode must be 'max' or 'min', got {metric_mode!r}")
        self.validation_metric, self.metric_mode = validation_metric, metric_mode
        if not isinstance(in_place, bool):
            raise JobError(f"in_place must be true or false, got {in_place!r}")
        self.in_place = in_place
        if not (isinstance(low_memory, bool) or low_memory == "auto"):
            raise JobError(f"low_memory must be true, false or \"auto\", got {low_memory!r}")
        self.low_memory = low_memory
        self._released = False
        self.max_gather_attempts = C.check_int(max_gather_attempts, "max_gather_attempts", 1)
        self.history: list[dict[str, Any]] = []
        self.best: dict[str, Any] | None = None
        self.persistor: Any = None
        self.model: dict[str, np.ndarray] = {}

    # --- building blocks ------------------------------------------------------------
    def _new_aggregator(self) -> Any:
        if self.aggregator_name == "median":
            return CoordinateMedian()
        if self.aggregator_name == "trimmed_mean":
            return TrimmedMean(trim=self.trim)
        return InTimeFedAvg(weights_key=self.weights_key, clip_norm=self.clip_norm)

    def _prepare(self, dxo: DXO, client: str) -> DXO:
        """Check ``dxo`` against the model; with ``clip_norm`` make it a clipped difference."""
        for name, a in dxo.data.items():
            ref = self.model.get(name)
            if ref is None or ref.shape != a.shape:
                want = "no such variable" if ref is None else f"the model's is {list(ref.shape)}"
                raise AggregationError(f"{client}: {name!r} {list(a.shape)} does not match the "
                                       f"model ({want})")
        if self.clip_norm is None:
            return dxo
        if dxo.kind == DataKind.WEIGHTS:
            diff = {n: np.subtract(a, self.model[n], dtype=self.model[n].dtype)
                    for n, a in dxo.data.items()}
            dxo = DXO(DataKind.WEIGHT_DIFF, diff, dxo.meta)
        if self.aggregator_name == "fedavg":
            return dxo  # InTimeFedAvg clips through the weight, without a copy
        norm = update_norm(dxo, client)
        if norm <= self.clip_norm:
            return dxo
        scale = self.clip_norm / norm
        return dxo.replace(data={n: (a * scale).astype(a.dtype) for n, a in dxo.data.items()})

    def _metrics(self, dxo: DXO) -> dict[str, Any]:
        metrics = dxo.meta.get(MetaKey.INITIAL_METRICS)
        return dict(metrics) if isinstance(metrics, dict) else {}

    def _weight(self, dxo: DXO) -> float:
        w = dxo.meta.get(self.weights_key, 1.0)
        return float(w) if isinstance(w, int | float) and not isinstance(w, bool) else 1.0

    def _uses_fold(self) -> bool:
        """In-place aggregation: FedAvg, no clipping, no server result filter on the task."""
        filters = self._task_filters()
        if filters is not None and filters.chain("result", self.train_task_name):
            return False
        return self.in_place and self.aggregator_name == "fedavg" and self.clip_norm is None

    def _fold_weight(self, rnd: int):
        """``weight(site, meta)`` of a result folded in place; AggregationError refuses it."""
        def weight(site: str, meta: Any) -> float:
            got = meta.get(MetaKey.CURRENT_ROUND)
            if got is not None and got != rnd:
                raise AggregationError(f"result is for round {got}, not {rnd}")
            if MetaKey.PROCESSED_ALGORITHM in meta:
                raise AggregationError(f"{site}: the DXO is still quantized "
                                       f"({meta[MetaKey.PROCESSED_ALGORITHM]}); dequantize it")
            raw = meta.get(self.weights_key, 1.0)
            ok = not isinstance(raw, bool) and isinstance(raw, int | float) \
                and math.isfinite(raw) and raw >= 0
            if not ok:
                raise AggregationError(f"{site}: meta[{self.weights_key!r}] must be a finite "
                                       f"number >= 0, got {raw!r}")
            return float(raw)
        return weight

    # --- one round ------------------------------------------------------------------
    async def _round(self, rnd: int, need: int, fl_ctx: FLContext) -> dict[str, Any]:
        spill = None
        lean = self.low_memory is True or (
            self.low_memory == "auto"
            and sum(a.nbytes for a in self.model.values()) >= LOW_MEMORY_AUTO_BYTES)
        if lean and self._uses_fold() and self.validation_metric is None:
            folder = C.workspace(self.engine) / ".cellnet-sent-model"
            spill = await trio.to_thread.run_sync(SpilledModel, self.model, folder)
        try:
            return await self._round_with(rnd, need, fl_ctx, spill)
        finally:
            if spill is not None:
                await self._model_back(spill)  # the round failed after releasing it
                await trio.to_thread.run_sync(spill.remove)

    async def _model_back(self, spill: SpilledModel | None) -> None:
        if spill is not None and self._released:
            self.model = await trio.to_thread.run_sync(spill.load)
            self._released = False

    async def _round_with(self, rnd: int, need: int, fl_ctx: FLContext,
                          spill: SpilledModel | None) -> dict[str, Any]:
        t_round = time.perf_counter()
        targets = list(self.clients)
        regathered: dict[str, str] = {}
        for _attempt in range(self.max_gather_attempts):
            await self._model_back(spill)  # a second gather sends the model again
            g = await self._gather(rnd, need, targets, fl_ctx, t_round, spill)
            fold = g["fold"]
            if fold is None or not fold.tainted:
                break
            for site in sorted(fold.tainted):
                regathered[site] = fold.failed.get(site, "cut off when the wait ended")
            targets = [n for n in targets if n in fold.committed]
            log.warning("round %d: result(s) of %s broke off after part was folded in place; "
                        "gathering the round again from %s", rnd, sorted(fold.tainted), targets)
            if len(targets) < need:
                raise JobError(f"round {rnd}: {len(targets)} of the {need} results it needs "
                               f"arrived whole; {C.failure_text(g['results'])}")
        else:
            raise JobError(f"round {rnd}: results kept breaking off mid-stream in "
                           f"{self.max_gather_attempts} attempts: {regathered}")
        results, count, spent = g["results"], g["count"], g["spent"]
        if count < need:
            raise JobError(
                f"round {rnd}: {count} of the {need} results it needs were accepted "
                f"(train timeout {self.train_timeout:g} s); {C.failure_text(results)}")
        t0 = time.perf_counter()
        try:
            update = await trio.to_thread.run_sync(g["aggregate"])
        except AggregationError as exc:
            raise JobError(f"round {rnd}: aggregation failed: {exc}") from exc
        if spill is not None and self._released and (
                update.kind == DataKind.WEIGHT_DIFF or set(update.data) != spill.names):
            await self._model_back(spill)  # the update needs the model's values
        sent = self.model
        self.model = await trio.to_thread.run_sync(C.apply_update, sent, update)
        self._released = False
        contributors = g["contributors"]
        del update, g
        spent += time.perf_counter() - t0
        rejected = rejected_of(results)
        failed = {n: r.rc for n, r in results.items()
                  if not r.ok and n not in rejected and n not in contributors}
        failed.update({n: ReturnCode.EXECUTION_RESULT_ERROR for n in regathered})
        summary: dict[str, Any] = {
            "round": rnd, "contributors": contributors, "rejected": rejected,
            "failed": failed,
            "metrics": C.mean_metrics(self._round_metrics), "in_place": fold is not None,
            "seconds": time.perf_counter() - t_round, "aggregate_seconds": spent,
            "answered_after": self._arrived}
        if regathered:
            summary["regathered_without"] = regathered
        await self._select_best(sent, summary["metrics"], rnd)
        await trio.to_thread.run_sync(self.persistor.save_round, self.model, rnd,
                                      C.workspace(self.engine))
        return summary

    async def _gather(self, rnd: int, need: int, targets: list[str], fl_ctx: FLContext,
                      t_round: float, spill: SpilledModel | None = None) -> dict[str, Any]:
        """Send the round's task to ``targets`` and fold their results in as they arrive."""
        meta = {MetaKey.CURRENT_ROUND: rnd, MetaKey.TOTAL_ROUND: self.num_rounds,
                AppConstants.NUM_ROUNDS: self.num_rounds}
        task = Task(self.train_task_name, DXO(DataKind.WEIGHTS, self.model, meta),
                    timeout=self.train_timeout)
        fold = None
        if self._uses_fold():
            fold = ResultFold(task.task_id, RoundAccumulator(self.model), self._fold_weight(rnd))
        agg = None if fold is not None else self._new_aggregator()
        if agg is not None:
            agg.reset(rnd)
        lock = trio.Lock()
        metrics: list[tuple[float, dict[str, Any]]] = []
        self._round_metrics = metrics
        self._arrived: dict[str, float] = {}  # seconds from the round's start to each answer
        spent = [0.0]  # seconds spent folding results in (whole ones)
        total = self.num_rounds - self.start_round
        answered = [0]

        async def received(result: TaskResult) -> TaskResult | None:
            answered[0] += 1
            self._arrived[result.client] = round(time.perf_counter() - t_round, 4)
            if result.ok and result.dxo is not None:
                try:
                    if result.folded is not None:
                        w = result.folded.weight
                    elif fold is not None:  # small: arrived whole, fold it here
                        t0 = time.perf_counter()
                        w = fold.fold_whole(result.client, result.dxo)
                        spent[0] += time.perf_counter() - t0
                    else:
                        w = await self._accept(agg, lock, result, rnd, spent)
                    metrics.append((w, self._metrics(result.dxo)))
                except AggregationError as exc:
                    result = TaskResult(result.client, ReturnCode.EXECUTION_RESULT_ERROR, None,
                                        f"{_REJECTED}{exc}")
            await report_progress(self.engine, {
                "workflow": type(self).__name__, "round": rnd, "rounds_done": len(self.history),
                "num_rounds": total, "sites_answered": answered[0],
                "sites_total": len(self.clients), "metrics": self._last_metrics()})
            return result

        results = await self.broadcast_and_wait(
            task, targets, min_responses=min(need, len(targets)),
            wait_time_after_min_received=self.wait_after_min, fl_ctx=fl_ctx,
            result_received_cb=received, result_fold=fold,
            on_data_sent=None if spill is None else functools.partial(self._release, task, spill))
        if fold is not None:
            spent[0] += fold.accumulator.seconds
            meta_out = {"aggregator": "InTimeFedAvg", MetaKey.CURRENT_ROUND: rnd}

            def aggregate() -> DXO:
                if not fold.committed:
                    raise AggregationError("no contribution has been accepted this round")
                return DXO(fold.kind, fold.accumulator.result(),
                           {**meta_out, "contributors": list(fold.committed)})
            contributors = list(fold.committed)
        else:
            aggregate, contributors = agg.aggregate, agg.contributors
        return {"fold": fold, "results": results, "count": len(contributors),
                "spent": spent[0], "aggregate": aggregate, "contributors": contributors}

    def _release(self, task: Task, spill: SpilledModel) -> None:
        """Every site has the model: drop it (spilled) while the results arrive."""
        task.data.data.clear()
        self.model = spill.skeleton()
        self._released = True

    async def _accept(self, agg: Any, lock: trio.Lock, result: TaskResult, rnd: int,
                      spent: list[float]) -> float:
        """Fold a whole result into ``agg`` (in a thread); its weight."""
        async with lock:
            t0 = time.perf_counter()
            dxo = await trio.to_thread.run_sync(self._prepare, result.dxo, result.client)
            took = await trio.to_thread.run_sync(agg.accept, dxo, result.client)
            spent[0] += time.perf_counter() - t0
        if not took:
            raise AggregationError(
                f"result is for round {result.dxo.meta.get(MetaKey.CURRENT_ROUND)}, not {rnd}")
        return self._weight(result.dxo)

    def _last_metrics(self) -> dict[str, float]:
        return dict(self.history[-1]["metrics"]) if self.history else {}

    async def _select_best(self, sent: dict[str, np.ndarray], metrics: dict[str, float],
                           rnd: int) -> None:
        key = self.validation_metric
        if key is None or key not in metrics:
            return
        value = metrics[key]
        best = self.best
        better = best is None or (value > best["value"] if self.metric_mode == "max"
                                  else value < best["value"])
        if better:
            # the results of round rnd evaluated the model sent in round rnd
            self.best = {"metric": key, "value": value, "model_of_round": rnd - 1}
            await trio.to_thread.run_sync(self.persistor.save, sent, "best",
                                          C.workspace(self.engine))

    # --- the workflow ---------------------------------------------------------------
    async def control_flow(self, fl_ctx: FLContext) -> dict[str, Any]:
        n = len(self.clients)
        need = self.min_clients or n
        if need > n:
            raise JobError(f"min_clients is {need} but the job has only {n} site(s)")
        self.persistor = C.make_persistor(self.persistor_spec, self.engine.app_dir)
        self.model = self.persistor.load_initial(self.engine.app_dir)
        self.best, self.history = None, []
        ws = C.workspace(self.engine)
        total = self.num_rounds - self.start_round
        await report_progress(self.engine, {
            "workflow": type(self).__name__, "round": self.start_round, "rounds_done": 0,
            "num_rounds": total, "sites_answered": 0, "sites_total": n, "metrics": {}})
        for rnd in range(self.start_round, self.num_rounds):
            self.history.append(await self._round(rnd, need, fl_ctx))
            await report_progress(self.engine, {
                "workflow": type(self).__name__, "round": rnd, "rounds_done": len(self.history),
                "num_rounds": total, "sites_answered": len(self.history[-1]["contributors"]),
                "sites_total": n, "metrics": self._last_metrics()})
        final = await trio.to_thread.run_sync(self.persistor.save, self.model, "final", ws)
        saved = getattr(self.persistor, "saved", {})
        return {"workflow": type(self).__name__, "aggregator": self.aggregator_name,
                "rounds": self.history, "final_model": str(final),
                "best_model": saved.get("best"), "best": self.best,
                "model_dir": str(Path(final).parent)}
