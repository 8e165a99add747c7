"""Job-like child cells in child processes: the command line, the environment, supervision.

A child cell (``site-1.J1``) is a separate process, so a crashing job cannot
take its parent down.  It links back to its parent over a *local link*: a TCP
connection to ``127.0.0.1`` on an ephemeral port the parent listens on, with
the same mutual TLS and HELLO identity check as any other link.  The child
authenticates with its parent's startup kit -- the child's FQCN has the
parent's site as its first part, so ``site part == certificate CN`` holds --
and the parent accepts only its own descendants on that port.  Reusing the
one link type (rather than a unix socket with its own trust rules) keeps a
single authentication path to audit; the TLS cost on loopback is small next
to a job's lifetime.

The parent passes the child where to connect in the command line of
``python -m cellnet.run --child`` or, for any other program, in the
environment (:data:`ENV_FQCN`, :data:`ENV_HOST`, :data:`ENV_PORT`,
:data:`ENV_KIT`), which :meth:`cellnet.node.CellNode.from_child_env` reads.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import sys
from collections.abc import Mapping, Sequence

import trio

__all__ = ["ENV_FQCN", "ENV_HOST", "ENV_KIT", "ENV_PORT", "ChildCell", "child_argv"]

log = logging.getLogger("cellnet.node")

ENV_FQCN = "CELLNET_CHILD_FQCN"
ENV_HOST = "CELLNET_PARENT_HOST"
ENV_PORT = "CELLNET_PARENT_PORT"
ENV_KIT = "CELLNET_KIT"
#: Seconds a child gets to exit after SIGTERM before it is killed.
TERMINATE_GRACE = 5.0


@dataclasses.dataclass(eq=False)
class ChildCell:
    """A child cell process started by :meth:`CellNode.start_child`."""

    fqcn: str
    process: trio.Process

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        """None while the process runs, else its exit status."""
        return self.process.returncode


def child_argv(
    kit_dir: os.PathLike[str] | str,
    fqcn: str,
    port: int,
    *,
    workspace: os.PathLike[str] | str | None = None,
    verbose: bool = False,
) -> list[str]:
    """The command line of a ``cellnet.run --child`` process linking to ``127.0.0.1:port``."""
    argv = [sys.executable, "-m", "cellnet.run", os.fspath(kit_dir), "--child", fqcn,
            "--host", "127.0.0.1", "--port", str(port)]
    if workspace is not None:
        argv += ["--workspace", os.fspath(workspace)]
    if verbose:
        argv.append("-v")
    return argv


def child_env(kit_dir: os.PathLike[str] | str, fqcn: str, port: int) -> dict[str, str]:
    """The environment of a child process: ours plus where and who it is."""
    env = dict(os.environ)
    env.update({ENV_FQCN: fqcn, ENV_HOST: "127.0.0.1", ENV_PORT: str(port),
                ENV_KIT: os.fspath(kit_dir)})
    return env


async def spawn(argv: Sequence[str], env: Mapping[str, str], fqcn: str) -> ChildCell:
    """Start the child's process (in its own process group, so a terminal ^C goes to us)."""
    if not argv or not all(isinstance(a, str) for a in argv):
        raise TypeError("argv must be a non-empty sequence of str")
    process = await trio.lowlevel.open_process(list(argv), env=dict(env), start_new_session=True)
    log.info("child cell %s started: pid %d", fqcn, process.pid)
    return ChildCell(fqcn, process)


async def supervise(child: ChildCell) -> None:
    """Wait for the child to exit; when cancelled, terminate it (then kill it after a grace)."""
    process = child.process
    try:
        code = await process.wait()
        log.info("child cell %s (pid %d) exited with status %d", child.fqcn, process.pid, code)
    finally:
        if process.returncode is None:
            with trio.CancelScope(shield=True):
                process.terminate()
                with trio.move_on_after(TERMINATE_GRACE):
                    await process.wait()
                if process.returncode is None:
                    log.warning("child cell %s ignored SIGTERM; killing it", child.fqcn)
                    process.kill()
                    await process.wait()
