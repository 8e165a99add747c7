"""FLContext: the props a workflow, executor or filter sees; only serialisable public props travel.

A context is a dict of props with two flags each: ``private`` props never
leave the process, and the keys the reference marks non-serializable
(engine, manager, runner: :class:`~cellnet.defs.NonSerializableKeys`) are
private whatever the caller says.  :meth:`FLContext.peer_props` is what a
messenger puts in the ``cmi.peer_props`` header; the receiver rebuilds the
sender's context with :func:`peer_context_from_headers` and stores it under
``FLContextKey.PEER_CONTEXT``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import cbor2

from cellnet.defs import CMIHeader, FLContextKey, NonSerializableKeys, ReservedKey
from cellnet.errors import CellnetError

__all__ = ["FLContext", "peer_context_from_headers"]

_NEVER_SENT = frozenset(str(k) for k in NonSerializableKeys.KEYS) | {
    str(FLContextKey.PEER_CONTEXT),
    str(FLContextKey.RUN_ABORT_SIGNAL),
    str(ReservedKey.AUX_RUNNER),
    str(ReservedKey.WORKSPACE_OBJECT),
    str(ReservedKey.SHARED_FL_CONTEXT),
}


def _serialisable(value: Any) -> bool:
    try:
        cbor2.dumps(value)
    except (cbor2.CBOREncodeError, TypeError, ValueError):
        return False
    return True


class FLContext:
    """Props keyed by name (the reserved ``__x__`` keys or the application's own)."""

    def __init__(self, props: Mapping[str, Any] | None = None) -> None:
        self._props: dict[str, Any] = {}
        self._private: set[str] = set()
        for key, value in (props or {}).items():
            self.set_prop(key, value, private=False)

    def __repr__(self) -> str:
        return f"FLContext({sorted(self._props)})"

    def set_prop(self, key: str, value: Any, private: bool = True) -> None:
        """Set ``key``; ``private=False`` lets it travel to peers (if it can be serialised)."""
        if not isinstance(key, str) or not key:
            raise TypeError(f"context prop keys must be non-empty str, got {key!r}")
        key = str(key)
        self._props[key] = value
        if private or key in _NEVER_SENT:
            self._private.add(key)
        else:
            self._private.discard(key)

    def copy(self) -> FLContext:
        """A new context with the same props and flags (values are shared, not copied)."""
        other = FLContext()
        other._props = dict(self._props)
        other._private = set(self._private)
        return other

    def get_prop(self, key: str, default: Any = None) -> Any:
        return self._props.get(str(key), default)

    def remove_prop(self, key: str) -> None:
        self._props.pop(str(key), None)
        self._private.discard(str(key))

    def is_private(self, key: str) -> bool:
        return str(key) in self._private

    def get_all_public_props(self) -> dict[str, Any]:
        """Public props (a copy), including ones that cannot be serialised."""
        return {k: v for k, v in self._props.items() if k not in self._private}

    def peer_props(self) -> dict[str, Any]:
        """The public props that can go on the wire (never engine/manager/runner)."""
        return {
            k: v
            for k, v in self._props.items()
            if k not in self._private and k not in _NEVER_SENT and _serialisable(v)
        }

    # --- the reserved props users know ----------------------------------------------
    def get_job_id(self) -> str | None:
        return self.get_prop(FLContextKey.CURRENT_JOB_ID)

    def get_identity_name(self) -> str | None:
        return self.get_prop(ReservedKey.IDENTITY_NAME) or self.get_prop(FLContextKey.CLIENT_NAME)

    def get_run_number(self) -> Any:
        return self.get_prop(FLContextKey.CURRENT_RUN)

    def get_engine(self) -> Any:
        return self.get_prop(ReservedKey.ENGINE)

    def get_peer_context(self) -> FLContext | None:
        return self.get_prop(FLContextKey.PEER_CONTEXT)

    def set_peer_context(self, peer: FLContext) -> None:
        self.set_prop(FLContextKey.PEER_CONTEXT, peer, private=True)


def peer_context_from_headers(headers: Mapping[str, Any]) -> FLContext | None:
    """The sender's context from a message's ``cmi.peer_props`` header (None if absent).

    Raises :class:`CellnetError` when the header is not a mapping of str keys.
    """
    props = headers.get(CMIHeader.HEADER_KEY_PEER_PROPS.value)
    if props is None:
        return None
    if not isinstance(props, Mapping) or not all(isinstance(k, str) and k for k in props):
        raise CellnetError("bad peer context: cmi.peer_props must map str keys to values")
    return FLContext({k: v for k, v in props.items() if k not in _NEVER_SENT})
