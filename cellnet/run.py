"""``cellnet run``: start a long-running server, site or child cell from its startup kit.

Exit status: 0 after SIGINT/SIGTERM (or, for a child cell, when its parent
went away), 2 for bad arguments, an unusable kit or a port already in use,
3 when ``--connect-timeout`` gave up on an unreachable uplink, 4 when the
peer refused our identity (or we refused its).
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import logging
import math
import os
import signal
import sys
from collections.abc import AsyncIterator, Sequence
from typing import Any

import trio

from cellnet.errors import AuthError, CellnetError, LinkError, ProvisionError, unwrap_group
from cellnet.node import CellNode
from cellnet.security import Kind, StartupKit
from cellnet.workspace import Workspace

__all__ = ["EXIT_AUTH", "EXIT_UNREACHABLE", "EXIT_USAGE", "build_parser", "run_main"]

log = logging.getLogger("cellnet.run")
#: What a site offers jobs when neither --resources nor <kit>/resources.json says.
DEFAULT_RESOURCES = {"slots": 4}
RESOURCES_FILE = "resources.json"
EXIT_USAGE = 2
EXIT_UNREACHABLE = 3
EXIT_AUTH = 4

_DESCRIPTION = """\
Start the cell of a startup kit and keep it running until SIGINT or SIGTERM.

A server kit listens for sites on --host/--port (default: the address in the
kit's connection.json). A site kit connects to the server at --host/--port
(default: from the kit) and re-connects with capped exponential backoff
whenever the link is lost; each failed attempt is logged. With --child the
process is the job-like child cell FQCN of the kit's site, linking to its
parent's local port (--port) on 127.0.0.1; it ends when that link ends.

Logs go to <workspace>/log.txt (and stderr); security events (links accepted
or refused, link up/down with the peer's identity) to <workspace>/audit.log.

Every cell answers requests on channel "cellnet": echo, info and stats.

The server and the sites also run the job runtime (unless --no-jobs): the
server keeps its job store in <workspace>/store (recovered on start: jobs
that were running end FINISHED:ABNORMAL, submitted ones are scheduled) and
schedules and deploys jobs; a site logs in (again after every reconnect),
offers its --resources and runs the job cells it is sent. Submit and follow
jobs with 'cellnet job ... <admin kit>'.

exit status: 0 stopped by a signal; 2 bad arguments, bad kit or port in use;
3 uplink unreachable for --connect-timeout seconds; 4 authentication refused.
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cellnet run",
        description=_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("kit", help="startup kit folder (from 'cellnet provision')")
    p.add_argument("--workspace", metavar="DIR",
                   help="folder for log.txt and audit.log (default: ./workspace/<cell name>)")
    p.add_argument("--host", help="server: address to listen on (0.0.0.0 for all); "
                   "site: the server's address; child: the parent's (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="server: port to listen on; site: the server's "
                   "port (default: fl_port of the kit); child: the parent's local port")
    p.add_argument("--connect-timeout", type=float, metavar="SECONDS",
                   help="give up (exit 3) when the uplink stays unreachable this long "
                   "(default: retry forever)")
    p.add_argument("--job", action="append", default=[], metavar="NAME",
                   help="also start the job-like child cell <cell>.NAME in a child process "
                   "(repeatable)")
    p.add_argument("--child", metavar="FQCN",
                   help="run as child cell FQCN (e.g. site-1.J1) of the kit's site")
    p.add_argument("--allow-p2p", action="store_true",
                   help="server: let cells open direct links to each other (they look up "
                   "each other's --p2p-listen address here); default: all traffic via the server")
    p.add_argument("--p2p-listen", metavar="HOST:PORT",
                   help="site: accept direct links from other cells on HOST:PORT (port 0: any) "
                   "and publish it to the server")
    p.add_argument("--project", metavar="TOML",
                   help="server: the project file; only its sites may log in and be named "
                   "in deploy maps (default: any site with a certificate of the project CA)")
    p.add_argument("--resources", metavar="JSON",
                   help="site: what this site offers to jobs' resource_spec, e.g. "
                   "'{\"slots\": 2}' (default: <kit>/resources.json, else "
                   f"'{json.dumps(DEFAULT_RESOURCES)}')")
    p.add_argument("--no-jobs", action="store_true",
                   help="run the bare cell, without the job runtime")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    return p


def _resources(args: argparse.Namespace, kit: StartupKit) -> dict[str, float]:
    """The site's resources: --resources, else <kit>/resources.json, else the default."""
    path = kit.path / RESOURCES_FILE
    if args.resources is not None:
        text, where = args.resources, "--resources"
    elif path.is_file():
        text, where = path.read_text(), str(path)
    else:
        return dict(DEFAULT_RESOURCES)
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise ValueError(f"{where} is not JSON: {exc}") from None
    if not isinstance(doc, dict) or not all(
            isinstance(v, int | float) and not isinstance(v, bool) and 0 <= v < math.inf
            for v in doc.values()):
        raise ValueError(f"{where} must be a JSON object of non-negative numbers, got {text!r}")
    return {str(k): float(v) for k, v in doc.items()}


def _known_sites(args: argparse.Namespace) -> list[str] | None:
    if args.project is None:
        return None
    from cellnet.security import load_project

    return [site.name for site in load_project(args.project).sites]


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"--p2p-listen wants HOST:PORT, got {text!r}")
    return host, int(port)



def _node(args: argparse.Namespace, kit: StartupKit, ws: Workspace) -> CellNode:
    common = {"connect_timeout": args.connect_timeout, "workspace": ws,
              "verbose_children": args.verbose}
    if args.child is not None:
        if args.port is None:
            raise ValueError("--child needs --port (the parent's local port)")
        return CellNode(kit, args.child, connect=(args.host or "127.0.0.1", args.port),
                        reconnect=False, **common)
    address = (args.host or kit.server.host, args.port if args.port is not None
               else kit.server.fl_port)
    if kit.kind is Kind.SERVER:
        if args.p2p_listen is not None:
            raise ValueError("--p2p-listen is for sites; the server listens anyway")
        return CellNode(kit, listen=address, allow_p2p=args.allow_p2p, **common)
    if args.allow_p2p:
        raise ValueError("--allow-p2p is the server's policy; give it to the server")
    listen = _host_port(args.p2p_listen) if args.p2p_listen is not None else None
    return CellNode(kit, connect=address, listen=listen, **common)


#: Stop signals that arrived while trio's signal receiver was not installed
#: (before the node started serving, or while it shuts down).
_early_signals: list[int] = []


def _remember_signal(signum: int, frame: object) -> None:
    """Process-wide SIGINT/SIGTERM handler outside trio: note the request, exit cleanly later.

    trio's receiver replaces it while the node serves and restores it afterwards,
    so a signal during start-up or shut-down never kills the process with -15.
    """
    _early_signals.append(signum)


@contextlib.asynccontextmanager
async def _runtime(node: CellNode, runtime: dict[str, Any] | None) -> AsyncIterator[None]:
    """The job runtime of a server (ServerRunner + JobStore) or a site (SiteRunner + login)."""
    if runtime is None:
        yield
        return
    from cellnet.fl import JobStore
    from cellnet.fl.runtime import ServerRunner, SiteRunner

    root = runtime["root"]
    if runtime["role"] == "server":
        store = JobStore(root / "store")
        async with ServerRunner(node, store, workspace=root / "run",
                                known_sites=runtime["sites"]):
            jobs = store.list_jobs()
            print(f"cellnet run: job runtime ready ({len(jobs)} job(s) in {store.root})",
                  flush=True)
            log.info("job store %s: %d job(s); scheduling", store.root, len(jobs))
            yield
        return
    async with SiteRunner(node, runtime["resources"], workspace=root / "jobs") as site, \
            trio.open_nursery() as nursery:
        nursery.start_soon(site.stay_logged_in)
        print(f"cellnet run: job runtime ready (resources {runtime['resources']})", flush=True)
        yield
        nursery.cancel_scope.cancel()


async def _serve(node: CellNode, jobs: Sequence[str],
                 runtime: dict[str, Any] | None = None) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with node, _runtime(node, runtime):
            if _early_signals:
                log.info("cell %s: stop requested during start-up", node.fqcn)
                return
            for job in jobs:
                child = await node.start_child(job)
                print(f"cellnet run: child cell {child.fqcn} linked (pid {child.pid})",
                      flush=True)
            where = f", listening on {node.address[0]}:{node.address[1]}" if node.address else ""
            print(f"cellnet run: cell {node.fqcn} running (pid {os.getpid()}{where})", flush=True)
            async for signum in signals:
                log.info("cell %s: %s received, stopping", node.fqcn, signal.Signals(signum).name)
                break


def _error(message: str, status: int) -> int:
    print(f"cellnet run: error: {message}", file=sys.stderr, flush=True)
    return status


def run_main(argv: Sequence[str] | None = None) -> int:
    """``cellnet run <kit> ...``; returns the exit status (see ``--help``)."""
    args = build_parser().parse_args(argv)
    if args.connect_timeout is not None and not args.connect_timeout > 0:
        return _error("--connect-timeout must be a positive number of seconds", EXIT_USAGE)
    if args.port is not None and not 0 <= args.port <= 65535:
        return _error(f"--port {args.port} is not a port number", EXIT_USAGE)
    try:
        kit = StartupKit.load(args.kit)
        ws = Workspace(args.workspace or os.path.join("workspace", args.child or kit.name))
        node = _node(args, kit, ws)
        runtime = None
        if args.child is None and not args.no_jobs:
            server = kit.kind is Kind.SERVER
            runtime = {"role": "server" if server else "site", "root": ws.root.resolve(),
                       "sites": _known_sites(args) if server else None,
                       "resources": None if server else _resources(args, kit)}
        ws.create()
    except (ProvisionError, ValueError, TypeError, OSError) as exc:
        return _error(str(exc), EXIT_USAGE)
    with ws.open_logs(verbose=args.verbose, stderr=True):
        log.info("cell %s starting from kit %s (workspace %s)", node.fqcn, kit.path, ws.root)
        try:
            trio.run(_serve, node, args.job, runtime)
        except BaseException as group:
            exc = unwrap_group(group)
            if isinstance(exc, OSError) and exc.errno == errno.EADDRINUSE:
                return _error(str(exc), EXIT_USAGE)
            if isinstance(exc, AuthError):
                return _error(f"authentication refused: {exc}", EXIT_AUTH)
            if isinstance(exc, LinkError):
                return _error(str(exc), EXIT_UNREACHABLE)
            if isinstance(exc, CellnetError | OSError):
                log.error("cell %s failed: %s", node.fqcn, exc)
                return _error(str(exc), EXIT_USAGE)
            raise
        log.info("cell %s stopped", node.fqcn)
    return 0


def process_main(argv: Sequence[str] | None = None) -> int:
    """Entry of a ``cellnet run`` process: stop signals never kill it, then ``run_main``.

    Installed for the whole life of the process (not by ``run_main`` itself, which
    tests call in-process), so SIGTERM during start-up or shut-down still exits 0.
    """
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, _remember_signal)
    return run_main(argv)


if __name__ == "__main__":
    raise SystemExit(process_main())
