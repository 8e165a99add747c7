"""Load an app component from its config spec: ``{"path": "module.Class", "args": {...}}``.

Workflows, executors, filters and event handlers of a job all come this
way; classes are looked up in the app's ``custom/`` folder first (put at
the front of ``sys.path``), then in any installed module.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

from cellnet.errors import JobError

__all__ = ["load_component"]


def load_component(spec: Any, app_dir: Path, what: str) -> Any:
    """Instantiate ``{"path": "module.Class", "args": {...}}`` (``custom/`` first on sys.path)."""
    if not isinstance(spec, dict) or not isinstance(spec.get("path"), str) \
            or "." not in spec["path"]:
        raise JobError(f"{what}: needs {{'path': 'module.Class', 'args': {{...}}}}, got {spec!r}")
    args = spec.get("args", {})
    if not isinstance(args, dict):
        raise JobError(f"{what}: 'args' must be an object")
    custom = str(app_dir / "custom")
    if (app_dir / "custom").is_dir() and custom not in sys.path:
        sys.path.insert(0, custom)
    module_name, _, cls_name = spec["path"].rpartition(".")
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError) as exc:
        raise JobError(f"{what}: cannot load {spec['path']!r}: {exc}") from exc
    try:
        return cls(**args)
    except TypeError as exc:
        raise JobError(f"{what}: {spec['path']} rejects args {sorted(args)}: {exc}") from exc
