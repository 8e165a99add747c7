"""WorkflowSequence: several workflows run one after another in one job (e.g. FedAvg, then eval).

``workflows`` is a list of ``{"path": "module.Class", "args": {...}}`` specs
(or Controller objects).  Each runs with the same engine and context once the
one before it finished; the job's results map each workflow's name (its
``name`` in the spec, else its class name) to its results.  A failing
workflow ends the sequence and the job with its error.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cellnet.errors import JobError
from cellnet.fl.runtime.context import FLContext
from cellnet.fl.runtime.controller import Controller

__all__ = ["WorkflowSequence"]


class WorkflowSequence(Controller):
    """Run ``workflows`` in order (see the module docstring)."""

    def __init__(self, workflows: list[Any]) -> None:
        if not isinstance(workflows, list) or not workflows:
            raise JobError("workflows must be a non-empty list of workflow specs")
        for n, spec in enumerate(workflows):
            if not isinstance(spec, Controller) and not (
                    isinstance(spec, Mapping) and isinstance(spec.get("path"), str)):
                raise JobError(f"workflows[{n}]: expected {{'path': 'module.Class', "
                               f"'args': {{...}}}} or a Controller, got {spec!r}")
        self.specs = list(workflows)

    def _build(self, n: int, spec: Any) -> tuple[str, Controller]:
        if isinstance(spec, Controller):
            return type(spec).__name__, spec
        from cellnet.fl.runtime.components import load_component

        inner = {k: v for k, v in spec.items() if k != "name"}
        flow = load_component(inner, Path(self.engine.app_dir), f"workflows[{n}]")
        if not isinstance(flow, Controller):
            raise JobError(f"workflows[{n}]: {spec['path']} is not a Controller")
        return str(spec.get("name") or type(flow).__name__), flow

    async def control_flow(self, fl_ctx: FLContext) -> dict[str, Any]:
        flows = [self._build(n, spec) for n, spec in enumerate(self.specs)]
        names = [name for name, _ in flows]
        if len(set(names)) != len(names):
            raise JobError(f"workflow names must differ (give each a 'name'): {names}")
        results: dict[str, Any] = {}
        for name, flow in flows:
            flow.engine = self.engine
            results[name] = await flow.control_flow(fl_ctx)
        return results
