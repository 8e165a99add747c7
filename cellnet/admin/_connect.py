"""An admin's connection to the server: one cell, one mutual-TLS link, a JobClient on top.

Admin identities (``user@domain``) are not cell names, so the admin's cell
announces :func:`~cellnet.security.names.admin_cell_name` of its identity
plus a per-connection suffix (``--<8 hex>``, so sessions never replace each
other); the server accepts that name only with that admin's certificate, and reads
the admin's name, org and role from the certificate (never from anything
the admin says).  Nothing listens on the admin side: it only connects.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import AsyncIterator

import trio

from cellnet.cell import Cell
from cellnet.errors import ProvisionError
from cellnet.fl.runtime.client import JobClient
from cellnet.security import Kind, StartupKit
from cellnet.security.names import AGENT_SEPARATOR, admin_cell_name
from cellnet.transport import open_link_stream

__all__ = ["admin_client"]


@contextlib.asynccontextmanager
async def admin_client(kit: StartupKit | str | os.PathLike[str], *, host: str | None = None,
                       port: int | None = None, timeout: float = 10.0,
                       request_timeout: float = 30.0) -> AsyncIterator[JobClient]:
    """``async with admin_client(kit) as jobs:`` a :class:`JobClient` linked to the server.

    ``host``/``port`` default to the kit's server address.  Raises
    :class:`ProvisionError` for a kit that is not an admin's,
    :class:`~cellnet.errors.LinkError` when the server cannot be reached in
    ``timeout`` seconds and an :class:`~cellnet.errors.AuthError` when
    either side refuses the other's certificate.
    """
    kit = kit if isinstance(kit, StartupKit) else StartupKit.load(kit)
    if kit.kind is not Kind.ADMIN:
        raise ProvisionError(f"{kit.path} is the kit of {kit.kind} {kit.name!r}, "
                             f"not of an admin")
    me = f"{admin_cell_name(kit.name)}{AGENT_SEPARATOR}{secrets.token_hex(4)}"  # per session
    server = kit.server.name
    peer = await open_link_stream(host or kit.server.host,
                                  kit.server.fl_port if port is None else port, kit,
                                  my_fqcn=me, expected_peer=server, timeout=timeout)
    try:
        async with Cell(me) as cell:
            await cell.add_link(peer.stream, peer.fqcn)
            yield JobClient(cell, server=server, timeout=request_timeout)
    finally:
        await trio.aclose_forcefully(peer.stream)
