"""Sync bridge: call a running Cell from blocking code in other threads (``trio.from_thread``).

Create the bridge inside the trio program that runs the cell (it captures that
run's token); its methods may then be called from any thread that is not the
trio thread -- worker threads of ``trio.to_thread.run_sync`` (e.g. blocking
request handlers) or threads the embedding program started itself.  Each call
runs the cell's coroutine in the trio thread and blocks until it finishes.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable
from typing import Any

import trio

from cellnet.cell import Cell
from cellnet.message import Message
from cellnet.stats import CellStatistics

__all__ = ["CellBridge"]


class CellBridge:
    """Blocking twins of a cell's messaging methods, for code outside the trio thread."""

    def __init__(self, cell: Cell, *, trio_token: trio.lowlevel.TrioToken | None = None) -> None:
        if not isinstance(cell, Cell):
            raise TypeError(f"expected a Cell, got {type(cell).__name__}")
        self.cell = cell
        self._token = trio_token if trio_token is not None else trio.lowlevel.current_trio_token()

    def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return trio.from_thread.run(functools.partial(fn, *args, **kwargs), trio_token=self._token)

    def send_request(
        self,
        target: str,
        channel: str,
        topic: str,
        msg: Any = None,
        timeout: float = 10.0,
        **kwargs: Any,
    ) -> Message:
        return self._run(self.cell.send_request, target, channel, topic, msg, timeout, **kwargs)

    def broadcast_request(
        self,
        targets: str | Iterable[str],
        channel: str,
        topic: str,
        msg: Any = None,
        timeout: float = 10.0,
        **kwargs: Any,
    ) -> dict[str, Message]:
        return self._run(
            self.cell.broadcast_request, targets, channel, topic, msg, timeout, **kwargs
        )

    def fire_and_forget(
        self,
        targets: str | Iterable[str],
        channel: str,
        topic: str,
        msg: Any = None,
        **kwargs: Any,
    ) -> dict[str, str]:
        return self._run(self.cell.fire_and_forget, targets, channel, topic, msg, **kwargs)

    def send_to_cell(
        self,
        targets: str | Iterable[str],
        channel: str,
        topic: str,
        request: Any,
        timeout: float,
        bulk_send: bool = False,
        optional: bool = False,
    ) -> dict[str, Message]:
        return self._run(
            self.cell.send_to_cell, targets, channel, topic, request, timeout, bulk_send, optional
        )

    def statistics(self) -> CellStatistics:
        return trio.from_thread.run_sync(self.cell.statistics, trio_token=self._token)
