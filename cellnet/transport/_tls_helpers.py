"""Small helpers of :class:`~cellnet.transport.tls.TLSStream`: the one-task-per-direction
conflict detector, byte views of caller buffers, and post-handshake certificate errors."""

from __future__ import annotations

import ssl
from typing import Any

import trio

from cellnet.errors import AuthError
from cellnet.security import classify_ssl_error

__all__: list[str] = []


class _Conflict:
    """Raises ``trio.BusyResourceError`` when two tasks enter the same direction at once."""

    __slots__ = ("_busy", "_msg")

    def __init__(self, msg: str) -> None:
        self._busy = False
        self._msg = msg

    def __enter__(self) -> None:
        if self._busy:
            raise trio.BusyResourceError(self._msg)
        self._busy = True

    def __exit__(self, *exc: object) -> None:
        self._busy = False

    @property
    def busy(self) -> bool:
        return self._busy


def _byte_view(data: Any, what: str) -> memoryview:
    try:
        view = memoryview(data)
    except TypeError:
        raise TypeError(f"{what} must be a bytes-like object, not {type(data).__name__}") from None
    if view.format != "B" or view.ndim != 1:
        if not view.c_contiguous:
            raise ValueError(f"{what} must be C-contiguous")
        view = view.cast("B")
    return view


def _auth_failure(exc: ssl.SSLError) -> AuthError | None:
    """The AuthError an SSL failure after the handshake stands for, if it is about certificates."""
    err = classify_ssl_error(exc)
    if type(err) is not AuthError or err.by_peer or err.verify_code is not None:
        return err
    return None
