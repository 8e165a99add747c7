"""The handlers every node serves on channel ``cellnet``: ``echo``, ``info`` and ``stats``.

They let scripts, tests and operators talk to any running cell without
writing a handler first.  ``echo`` answers with the request's payload as is
(bytes or tensors); ``info`` and ``stats`` answer with UTF-8 JSON, readable
from any language: use :func:`json_payload` to decode a reply.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from cellnet.message import Message
from cellnet.stats import CellStatistics

__all__ = [
    "NODE_CHANNEL",
    "NodeTopic",
    "json_payload",
    "register_builtins",
    "statistics_dict",
]

#: The channel of the built-in handlers.
NODE_CHANNEL = "cellnet"


class NodeTopic:
    """Topics of the built-in handlers."""

    ECHO = "echo"
    INFO = "info"
    STATS = "stats"


def statistics_dict(stats: CellStatistics) -> dict[str, Any]:
    """A JSON-ready dict of a statistics snapshot (latency bucket bounds become strings)."""
    return {
        "fqcn": stats.fqcn,
        "peers": list(stats.peers),
        "channels": {
            name: {
                "messages_in": ch.messages_in,
                "bytes_in": ch.bytes_in,
                "messages_out": ch.messages_out,
                "bytes_out": ch.bytes_out,
            }
            for name, ch in stats.channels.items()
        },
        "latency": {repr(bound): n for bound, n in stats.latency.items()},
        "requests_completed": stats.requests_completed,
        "mean_latency": stats.mean_latency,
        "errors": dict(stats.errors),
        "pending_requests": stats.pending_requests,
        "forwarded": stats.forwarded,
        "queued_bytes": dict(stats.queued_bytes),
    }


def _json(doc: Any) -> bytes:
    return json.dumps(doc, sort_keys=True, allow_nan=False, default=str).encode()


def json_payload(reply: Message) -> Any:
    """Decode the JSON payload of an ``info``/``stats`` reply.

    Raises ``ValueError`` when the reply carries no JSON (e.g. an error reply).
    """
    if not isinstance(reply, Message):
        raise TypeError(f"expected a Message, got {type(reply).__name__}")
    payload = reply.payload
    if payload is None or isinstance(payload, dict):
        raise ValueError(f"reply has no JSON payload (return code {reply.return_code!r})")
    try:
        return json.loads(bytes(payload).decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"reply payload is not UTF-8 JSON: {exc}") from exc


def register_builtins(cell: Any, info: Callable[[], dict[str, Any]]) -> None:
    """Serve ``echo``, ``info`` (from ``info()``) and ``stats`` on channel ``cellnet``."""

    def echo(msg: Message) -> Any:
        return msg.payload

    def info_handler(msg: Message) -> bytes:
        return _json(info())

    def stats_handler(msg: Message) -> bytes:
        return _json(statistics_dict(cell.statistics()))

    cell.register_request_cb(NODE_CHANNEL, NodeTopic.ECHO, echo)
    cell.register_request_cb(NODE_CHANNEL, NodeTopic.INFO, info_handler)
    cell.register_request_cb(NODE_CHANNEL, NodeTopic.STATS, stats_handler)
