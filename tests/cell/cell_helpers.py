"""Shared fixtures for the cell tests: a federation of in-process cells."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from cellnet.cell import Cell, connect_in_process
from cellnet.fqcn import agent_site_fqcn
from cellnet.link import LinkConfig

AGENT = agent_site_fqcn("site-1", "a1", "J")  # site-1.J.a1
NAMES = ("server", "site-1", "site-2", "server.J", "site-1.J", "site-2.J", AGENT)
EDGES = (
    ("server", "site-1"),
    ("server", "site-2"),
    ("server", "server.J"),
    ("site-1", "site-1.J"),
    ("site-2", "site-2.J"),
    ("site-1.J", AGENT),
)

QUIET = LinkConfig(heartbeat_interval=None, idle_timeout=None)


@contextlib.asynccontextmanager
async def federation(names=NAMES, edges=EDGES, **cell_kwargs) -> AsyncIterator[dict[str, Cell]]:
    """Running cells linked along ``edges``; yields ``{fqcn: cell}``."""
    cell_kwargs.setdefault("link_config", QUIET)
    async with contextlib.AsyncExitStack() as stack:
        cells = {}
        for name in names:
            cells[name] = await stack.enter_async_context(Cell(name, **cell_kwargs))
        for a, b in edges:
            await connect_in_process(cells[a], cells[b])
        yield cells


def echo(msg):
    """A sync handler: reply with the request's payload."""
    return bytes(msg.payload or b"")


async def async_echo(msg):
    return bytes(msg.payload or b"")
