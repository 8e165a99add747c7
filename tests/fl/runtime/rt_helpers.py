"""Helpers of the runtime tests: a whole federation (server + sites + admin cell) in one process."""

from __future__ import annotations

import contextlib
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import trio

from cellnet.fl import JobStore
from cellnet.fl.runtime import JobClient, ServerRunner, SiteRunner
from cellnet.node import CellNode
from cellnet.transport import Backoff

HOST = "127.0.0.1"
EXAMPLE = Path(__file__).resolve().parents[3] / "examples" / "hello-echo"


@dataclass
class Federation:
    server: CellNode
    runner: ServerRunner
    store: JobStore
    sites: dict[str, SiteRunner] = field(default_factory=dict)
    client: JobClient | None = None


@contextlib.asynccontextmanager
async def federation(kits: Path, root: Path, sites=("site-1", "site-2"), slots=1.0):
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(CellNode(kits / "server", listen=(HOST, 0)))
        store = JobStore(root / "server")
        runner = await stack.enter_async_context(
            ServerRunner(server, store, poll_interval=0.1, abort_timeout=8.0))
        fed = Federation(server, runner, store)
        backoff = Backoff(base=0.01, cap=0.05)
        for name in sites:
            node = await stack.enter_async_context(
                CellNode(kits / name, connect=server.address, backoff=backoff))
            site = await stack.enter_async_context(
                SiteRunner(node, {"slots": slots}, workspace=root / name))
            with trio.fail_after(10):
                await site.login()
            fed.sites[name] = site
        admin = await stack.enter_async_context(
            CellNode(kits / "site-3", "site-3--admin", connect=server.address, backoff=backoff))
        await admin.wait_connected(10)
        fed.client = JobClient(admin.cell)
        yield fed


def job_copy(tmp: Path, name: str = "job", **edits: str) -> Path:
    """A copy of examples/hello-echo; ``edits`` maps relative paths to new file text."""
    dest = tmp / name
    shutil.copytree(EXAMPLE, dest, ignore=shutil.ignore_patterns("__pycache__"))
    for rel, text in edits.items():
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return dest
