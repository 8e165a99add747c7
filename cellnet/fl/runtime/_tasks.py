"""Background tasks of the job runtime that must never take the runtime down with them."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from cellnet.errors import unwrap_group

__all__ = ["spawn_guarded"]


def spawn_guarded(nursery: trio.Nursery, log: logging.Logger,
                  fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
    """Run ``fn(*args)`` in ``nursery``; an exception it raises is logged with its traceback
    instead of cancelling the nursery (one job's failure must not end every other job)."""

    async def guarded() -> None:
        try:
            await fn(*args)
        except Exception as exc:
            log.error("job runtime task %s%r failed: %s", getattr(fn, "__name__", fn),
                      args[:1], unwrap_group(exc), exc_info=exc)

    nursery.start_soon(guarded)
