"""A running cell's workspace folder: ``log.txt`` for everything, ``audit.log`` for security events.

A workspace is a plain directory.  :meth:`Workspace.open_logs` attaches two
file handlers for the lifetime of a ``with`` block (so several workspaces in
one test process never leak handlers into each other):

* ``log.txt`` gets every ``cellnet.*`` record at INFO (DEBUG with ``verbose``);
* ``audit.log`` (``WorkspaceConstants.AUDIT_LOG``) gets the records of the
  ``cellnet.audit`` logger only: links accepted or refused, link up and down,
  each with the peer's identity.  Handshakes the transport refuses (bad
  certificate, name or protocol) reach the node through ``serve_links``'s
  ``on_refused`` callback, so they are audited too although no cell sees them.

Audit lines are ``<UTC time> <event> key=value ...``: one event per line, easy
to grep and to parse.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from cellnet.defs import WorkspaceConstants

__all__ = ["AUDIT_LOGGER", "LOG_FILE", "Workspace", "audit"]

LOG_FILE = "log.txt"
AUDIT_LOGGER = "cellnet.audit"
_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_AUDIT_FORMAT = "%(asctime)s %(message)s"

_audit_log = logging.getLogger(AUDIT_LOGGER)


def _quote(value: object) -> str:
    text = str(value)
    if not text or any(c.isspace() or c in '"=' for c in text):
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", " ") + '"'
    return text


def audit(event: str, **fields: object) -> None:
    """Record one security event (``link-up``, ``auth-refused``, ...) on the audit logger."""
    parts = [event, *(f"{k}={_quote(v)}" for k, v in fields.items() if v is not None)]
    _audit_log.info(" ".join(parts))


class _UTCFormatter(logging.Formatter):
    converter = staticmethod(time.gmtime)
    default_msec_format = "%s.%03dZ"


class Workspace:
    """The folder a cell writes its logs (and later its jobs) into; created when missing."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        if not isinstance(root, str | os.PathLike):
            raise TypeError(f"a workspace is a path, got {type(root).__name__}")
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"Workspace({str(self.root)!r})"

    @property
    def log_path(self) -> Path:
        return self.root / LOG_FILE

    @property
    def audit_path(self) -> Path:
        return self.root / WorkspaceConstants.AUDIT_LOG.value

    def subdir(self, name: str) -> Workspace:
        """The workspace of a child cell, ``<root>/<name>``."""
        if not name or "/" in name or os.sep in name or name in (".", ".."):
            raise ValueError(f"a child workspace name must be a plain folder name, got {name!r}")
        return Workspace(self.root / name)

    def create(self) -> None:
        """Make the folder (and its parents); a path that is a file is an error."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError) as exc:
            raise NotADirectoryError(f"workspace {self.root} is not a directory") from exc

    @contextlib.contextmanager
    def open_logs(self, *, verbose: bool = False, stderr: bool = False) -> Iterator[Workspace]:
        """Log ``cellnet.*`` to ``log.txt`` and audit events to ``audit.log`` inside the block.

        ``stderr`` also echoes the log to the terminal (what ``cellnet run``
        does).  Handlers and the audit bridge are removed on exit.
        """
        self.create()
        level = logging.DEBUG if verbose else logging.INFO
        root = logging.getLogger("cellnet")
        main = logging.FileHandler(self.log_path, encoding="utf-8")
        main.setFormatter(_UTCFormatter(_FORMAT))
        main.setLevel(level)
        audit_handler = logging.FileHandler(self.audit_path, encoding="utf-8")
        audit_handler.setFormatter(_UTCFormatter(_AUDIT_FORMAT))
        handlers: list[tuple[logging.Logger, logging.Handler]] = [
            (root, main),
            (_audit_log, audit_handler),
        ]
        if stderr:
            console = logging.StreamHandler(sys.stderr)
            console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
            console.setLevel(level)
            handlers.append((root, console))
        old_level = root.level
        old_audit_level = _audit_log.level
        root.setLevel(min(level, old_level) if old_level else level)
        _audit_log.setLevel(logging.INFO)
        for logger, handler in handlers:
            logger.addHandler(handler)
        try:
            yield self
        finally:
            for logger, handler in handlers:
                logger.removeHandler(handler)
                handler.close()
            root.setLevel(old_level)
            _audit_log.setLevel(old_audit_level)
