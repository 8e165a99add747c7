"""Direct peer-to-peer links on demand: the server's endpoint registry and its lookups.

A node that listens (``CellNode(..., listen=(host, port))``) registers its
address with the server after its uplink is up.  The server keeps the table
only when its policy allows direct links (``allow_p2p=True``); otherwise it
answers every registration and lookup with a refusal, and traffic keeps going
through the server.  :meth:`CellNode.connect_peer` asks for the endpoint of a
target (the target itself or its nearest registered ancestor, usually its
site) and opens an ordinary mutual-TLS link to it; routing then prefers the
direct link because it is the deepest linked cell on the target's path.

A registration is accepted only for the cell that sends it (its ``origin``)
and only while that cell is a direct peer of the server, so a cell cannot
publish an address under another cell's name through a relay.
"""

from __future__ import annotations

import json
from typing import Any

from cellnet import fqcn as _fqcn
from cellnet.errors import RouteError
from cellnet.message import Message, MessageHeaderKey
from cellnet.node._builtin import NODE_CHANNEL, json_payload

REGISTER = "endpoint.register"
LOOKUP = "endpoint.lookup"


def _doc(msg: Message) -> dict[str, Any]:
    try:
        doc = json.loads(bytes(msg.payload or b"").decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, TypeError) as exc:
        raise ValueError(f"endpoint request is not UTF-8 JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ValueError("endpoint request must be a JSON object")
    return doc


def _answer(doc: dict[str, Any]) -> bytes:
    return json.dumps(doc, sort_keys=True).encode()


class EndpointRegistry:
    """The server's table of where cells accept direct links (``fqcn -> (host, port)``)."""

    def __init__(self, cell: Any, *, allowed: bool) -> None:
        self.cell = cell
        self.allowed = allowed
        self.endpoints: dict[str, tuple[str, int]] = {}

    def register_handlers(self) -> None:
        self.cell.register_request_cb(NODE_CHANNEL, REGISTER, self._on_register)
        self.cell.register_request_cb(NODE_CHANNEL, LOOKUP, self._on_lookup)

    def _on_register(self, msg: Message) -> bytes:
        if not self.allowed:
            return _answer({"accepted": False, "reason": "direct links are not allowed"})
        doc = _doc(msg)
        origin = msg.headers.get(MessageHeaderKey.ORIGIN.value)
        name, host, port = doc.get("fqcn"), doc.get("host"), doc.get("port")
        if name != origin or origin not in self.cell.peers:
            raise ValueError(f"{origin!r} may register only itself, as a direct peer")
        if not isinstance(host, str) or not host or type(port) is not int or not 0 < port < 65536:
            raise ValueError(f"bad endpoint {host!r}:{port!r}")
        self.endpoints[_fqcn.validate(name)] = (host, port)
        return _answer({"accepted": True})

    def _on_lookup(self, msg: Message) -> bytes:
        if not self.allowed:
            return _answer({"endpoint": None, "reason": "direct links are not allowed"})
        target = _fqcn.validate(_doc(msg).get("target"))
        parts = _fqcn.split(target)
        for depth in range(len(parts), 0, -1):  # the target, then its ancestors
            name = _fqcn.join(parts[:depth])
            if name in self.endpoints and name in self.cell.peers:
                host, port = self.endpoints[name]
                return _answer({"endpoint": {"fqcn": name, "host": host, "port": port}})
        return _answer({"endpoint": None, "reason": f"no cell on the path to {target} accepts "
                                                    f"direct links"})


async def register(cell: Any, server: str, address: tuple[str, int], timeout: float) -> bool:
    """Publish this cell's listening address at the server; True when accepted."""
    host, port = address
    body = _answer({"fqcn": cell.fqcn, "host": host, "port": port})
    reply = await cell.send_request(server, NODE_CHANNEL, REGISTER, body, timeout=timeout)
    if reply.return_code != "ok":
        return False
    return bool(json_payload(reply).get("accepted"))


async def lookup(cell: Any, server: str, target: str, timeout: float) -> tuple[str, str, int]:
    """``(fqcn, host, port)`` of the cell to link to for ``target``, or RouteError why not."""
    body = _answer({"target": target})
    reply = await cell.send_request(server, NODE_CHANNEL, LOOKUP, body, timeout=timeout)
    if reply.return_code != "ok":
        raise RouteError(f"endpoint lookup for {target} failed: {reply.return_code} "
                         f"({reply.error or 'no detail'})")
    doc = json_payload(reply)
    endpoint = doc.get("endpoint")
    if not endpoint:
        raise RouteError(f"no direct link to {target}: {doc.get('reason', 'refused')}")
    return endpoint["fqcn"], endpoint["host"], int(endpoint["port"])
