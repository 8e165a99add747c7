"""The short loop of a training script: ``init()``, ``receive()``, ``send()``, ``is_running()``.

::

    import cellnet.client as flare

    flare.init()
    while flare.is_running():
        model = flare.receive()            # .params, .current_round, .total_rounds, .meta
        params = train(model.params)
        flare.send(params, metrics={"loss": 0.1}, num_steps=100)

One :class:`~cellnet.client.FlareAgent` per process underneath.  Models
are dicts ``name -> numpy array``; a PyTorch ``state_dict`` (tensors) is
accepted by :func:`send` too (CPU tensors are viewed as numpy arrays, not
copied; bfloat16 through ml_dtypes) and :func:`~cellnet.client.to_torch`
(or ``torch.from_numpy``, for all but bfloat16) turns the received arrays
back into tensors without a copy.  ``metrics`` of a training result are
those of the *received* model on local validation data, as in the
reference ``FLModel``: they go to ``meta[initial_metrics]``, where
ScatterAndGather finds them to pick the best model.
:func:`is_running` waits for the next task and is False once the job is
over (the agent closed).
"""

from __future__ import annotations

import atexit
import dataclasses
import math
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from cellnet.fl.dxo import DataKind

from ._convert import to_numpy
from .agent import FlareAgent
from .defs import AgentClosed, CallStateError, MetaKey, Task, TaskResult

__all__ = ["FLModel", "get_job_id", "get_site_name", "init", "is_running", "receive", "send",
           "shutdown"]

#: The meta key under which :func:`send` puts the metrics of a result.
METRICS_KEY = "metrics"


@dataclasses.dataclass
class FLModel:
    """A received task: params (name -> writable numpy array), round numbers, meta."""

    params: dict[str, np.ndarray]
    current_round: int | None = None
    total_rounds: int | None = None
    meta: dict = dataclasses.field(default_factory=dict)
    task_name: str = ""


class _State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.agent: FlareAgent | None = None
        self.fetched: Task | None = None  # taken by is_running(), not yet by receive()
        self.current: Task | None = None  # received, result not yet sent


_S = _State()


def init(agent: FlareAgent | None = None, **agent_kwargs: Any) -> FlareAgent:
    """Start this process's agent (once; later calls return it)."""
    with _S.lock:
        if _S.agent is not None:
            return _S.agent
        agent = agent if agent is not None else FlareAgent(**agent_kwargs)
        agent.start()
        _S.agent, _S.fetched, _S.current = agent, None, None
    atexit.register(shutdown)
    return agent


def _agent() -> FlareAgent:
    if _S.agent is None:
        raise CallStateError("call cellnet.client.init() first")
    return _S.agent


def is_running() -> bool:
    """Wait for the next task; False once the job is over.  True while a task is open."""
    agent = _agent()
    if _S.fetched is not None or _S.current is not None:
        return True
    try:
        _S.fetched = agent.get_task()
    except AgentClosed:
        return False
    return True


def _model(task: Task) -> FLModel:
    data = task.data or {}
    meta = dict(task.meta)
    return FLModel({k: np.array(v) for k, v in data.items()}, meta.get(MetaKey.CURRENT_ROUND),
                   meta.get(MetaKey.TOTAL_ROUND), meta, task.task_name)


def receive(timeout: float | None = None) -> FLModel | None:
    """The current task as an :class:`FLModel`; None when the job is over or on timeout."""
    agent = _agent()
    if _S.current is None:
        task, _S.fetched = _S.fetched, None
        if task is None:
            try:
                task = agent.get_task(timeout)
            except AgentClosed:
                return None
            if task is None:
                return None
        _S.current = task
    return _model(_S.current)


def _metrics(metrics: Mapping[str, Any] | None) -> dict[str, float]:
    if metrics is None:
        return {}
    if not isinstance(metrics, Mapping):
        raise TypeError(f"metrics must be a mapping name -> number, got {type(metrics).__name__}")
    out = {}
    for k, v in metrics.items():
        if hasattr(v, "item"):
            v = v.item()
        if isinstance(v, bool) or not isinstance(v, int | float) or math.isnan(float(v)):
            raise TypeError(f"metric {k!r} must be a number, got {v!r}")
        out[str(k)] = float(v)
    return out


def send(model: Mapping[str, Any] | FLModel | None, metrics: Mapping[str, Any] | None = None,
         num_steps: int | None = None) -> bool:
    """Submit the result of the received task; whether the site took it.

    ``model``: the trained params (numpy arrays or a torch state dict), or
    None to send only ``metrics`` (a METRICS result, e.g. for ``validate``).
    With a model, ``metrics`` score the model *received* for this task.
    ``num_steps`` (the training steps of this round) goes to
    ``NUM_STEPS_CURRENT_ROUND``, which FedAvg weights by.
    """
    agent = _agent()
    if _S.current is None:
        raise CallStateError("receive() a task before send()")
    if isinstance(model, FLModel):
        model = model.params
    if model is not None and not isinstance(model, Mapping):
        raise TypeError(f"model must be a mapping name -> array (or None), got "
                        f"{type(model).__name__}")
    if num_steps is not None and (isinstance(num_steps, bool) or not isinstance(num_steps, int)
                                  or num_steps < 0):
        raise ValueError(f"num_steps must be an int >= 0, got {num_steps!r}")
    values = _metrics(metrics)
    meta: dict[str, Any] = {MetaKey.CURRENT_ROUND.value: _S.current.meta.get(MetaKey.CURRENT_ROUND)}
    if num_steps is not None:
        meta[MetaKey.NUM_STEPS_CURRENT_ROUND.value] = num_steps
    if values:
        meta[METRICS_KEY] = values
        if model is not None:  # the received model's scores (FedAvg's best-model choice)
            meta[MetaKey.INITIAL_METRICS.value] = values
    if model is None:
        if not values:
            raise ValueError("send() needs a model or metrics")
        data = {k: np.asarray(v, np.float64) for k, v in values.items()}
        meta[MetaKey.DATA_KIND.value] = DataKind.METRICS.value
    else:
        data = {str(k): to_numpy(str(k), v) for k, v in model.items()}
    result = TaskResult(meta, data)
    ok = agent.submit_result(result)
    _S.current = None
    return ok


def get_site_name() -> str:
    return _agent().site_name


def get_job_id() -> str | None:
    return _agent().job_id


def shutdown() -> None:
    """Stop the agent (idempotent); ``init()`` may start a new one afterwards."""
    with _S.lock:
        agent, _S.agent, _S.fetched, _S.current = _S.agent, None, None, None
    if agent is not None:
        agent.stop()
