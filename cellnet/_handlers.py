"""Registered handlers: how each is called, and which may run inline in a link's reader.

A plain sync handler runs inline (no task switch).  So does an ``async def``
handler whose code cannot suspend -- no ``await``, ``async for`` or ``async
with`` anywhere in it: its coroutine always finishes on its first step, so the
reader steps it at once instead of waking a server task for it (the idea of
asyncio's eager tasks, made safe by reading the bytecode beforehand rather than
catching a suspension afterwards, which trio could not undo).  Every other
async handler, and a sync one registered ``blocking=True``, runs in a task.
"""

from __future__ import annotations

import dis
import functools
import inspect
from collections.abc import Callable
from types import CodeType
from typing import Any

__all__ = ["Handler", "never_suspends"]

#: Bytecodes through which a coroutine can suspend (await, async for, async with; 3.11+).
_SUSPENDING_OPS = frozenset({
    "GET_AWAITABLE", "SEND", "YIELD_VALUE", "BEFORE_ASYNC_WITH", "GET_AITER", "GET_ANEXT",
    "END_ASYNC_FOR",
})


def _coroutine_code(fn: Any) -> CodeType | None:
    """The code of the ``async def`` that calling ``fn`` runs, when it can be told."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    func = getattr(fn, "__func__", fn)  # a bound method: its function
    code = getattr(func, "__code__", None)
    if code is None:  # an object with an async __call__
        call = getattr(type(fn), "__call__", None)  # noqa: B004
        code = getattr(getattr(call, "__func__", call), "__code__", None)
    if not isinstance(code, CodeType) or not code.co_flags & inspect.CO_COROUTINE:
        return None
    return code


def never_suspends(fn: Callable) -> bool:
    """True if ``fn`` is an ``async def`` (or wraps one) whose body cannot suspend."""
    code = _coroutine_code(fn)
    return code is not None and not any(
        ins.opname in _SUSPENDING_OPS for ins in dis.get_instructions(code)
    )


class Handler:
    """A registered handler: ``fn``, how to call it, and ``call`` for the inline ones."""

    __slots__ = ("blocking", "call", "fn", "inline", "is_async")

    def __init__(self, fn: Callable, blocking: bool = False) -> None:
        is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004 - async callable objects
        )
        if is_async and blocking:
            raise ValueError("blocking=True is for sync handlers; an async one must not block")
        self.fn, self.is_async, self.blocking = fn, is_async, blocking
        self.inline = not blocking and (not is_async or never_suspends(fn))
        #: ``call(msg) -> result`` for an inline handler (the plain function when sync)
        self.call: Callable[[Any], Any] = self._step if is_async else fn

    def _step(self, msg: Any) -> Any:
        """Run an async handler that cannot suspend to its end, right here."""
        coro = self.fn(msg)
        try:
            coro.send(None)
        except StopIteration as done:
            return done.value
        coro.close()  # unreachable for code never_suspends() passed; fail loudly if not
        raise RuntimeError(f"handler {self.fn!r} suspended although its code cannot")
