"""``cellnet job submit|list|status|abort|errors <admin kit> ...``: drive jobs on a running server.

Each command opens one mutual-TLS link with the admin's startup kit
(:func:`~cellnet.admin.admin_client`), does its requests through
:class:`~cellnet.fl.runtime.JobClient` and exits.  Output is a short text by
default and the full answer as JSON with ``--json``.

Exit status: 0 done (with ``--wait``: the job ended FINISHED:COMPLETED);
1 the server refused the request (unknown job, invalid job folder, ...) or
the awaited job ended otherwise or not in time; 2 bad arguments or kit;
3 the server is unreachable; 4 authentication refused.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from cellnet.defs import JobMetaKey, RunStatus
from cellnet.errors import (
    AuthError,
    JobError,
    LinkError,
    ProvisionError,
    unwrap_group,
)
from cellnet.fl.job_store import FINISHED_STATUSES, STATUS_HISTORY, STATUS_REASON

__all__ = ["build_parser", "job_main"]

EXIT_REFUSED, EXIT_USAGE, EXIT_UNREACHABLE, EXIT_AUTH = 1, 2, 3, 4


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cellnet job", description="Submit and follow jobs on a running cellnet server "
        "with an admin startup kit.", epilog="exit status: 0 ok; 1 refused, or an awaited job "
        "did not complete; 2 bad arguments or kit; 3 server unreachable; 4 auth refused")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("kit", help="the admin's startup kit folder")
    common.add_argument("--host", help="the server's address (default: from the kit)")
    common.add_argument("--port", type=int, help="the server's port (default: from the kit)")
    common.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS",
                        help="connect/request timeout (default 10)")
    common.add_argument("--json", action="store_true", help="print the answer as JSON")
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    s = sub.add_parser("submit", parents=[common], help="submit a job folder")
    s.add_argument("folder", help="job folder (meta.json + one folder per app)")
    s.add_argument("--token", help="submit token: a retried submit with it makes no duplicate")
    s.add_argument("--wait", type=float, metavar="SECONDS",
                   help="follow the job until it ends (at most SECONDS)")
    sub.add_parser("list", parents=[common], help="list the jobs")
    st = sub.add_parser("status", parents=[common], help="a job's status and meta")
    st.add_argument("job_id")
    st.add_argument("--wait", type=float, metavar="SECONDS",
                    help="wait until the job ends (at most SECONDS)")
    a = sub.add_parser("abort", parents=[common], help="abort a job")
    a.add_argument("job_id")
    e = sub.add_parser("errors", parents=[common], help="the errors recorded for a job")
    e.add_argument("job_id")
    return p


def _out(args: argparse.Namespace, doc: Any, text: str) -> None:
    print(json.dumps(doc, indent=1, default=str) if args.json else text, flush=True)


async def follow_job(client: Any, job_id: str, seconds: float,
                     on_poll: Callable[[list[dict[str, Any]], bool], Awaitable[None]],
                     poll: float = 0.2) -> dict[str, Any]:
    """Poll the job's meta until it ends; its final meta (TooSlowError after ``seconds``).

    After each poll ``await on_poll(new, ended)``: the status history entries
    new since the last poll, and whether the job has ended.
    """
    seen = 0
    with trio.fail_after(seconds):
        while True:
            meta = await client.get_meta(job_id)
            history = meta.get(STATUS_HISTORY, [])
            ended = meta[JobMetaKey.STATUS] in FINISHED_STATUSES
            await on_poll(history[seen:], ended)
            seen = len(history)
            if ended:
                return meta
            await trio.sleep(poll)


async def _follow(client: Any, job_id: str, seconds: float, quiet: bool) -> dict[str, Any]:
    """Print each status change until the job ends; its meta (TooSlowError after ``seconds``)."""

    async def show(new: list[dict[str, Any]], ended: bool) -> None:
        if not quiet:
            for h in new:
                why = f" ({h['reason']})" if h.get("reason") else ""
                print(f"{h.get('time_iso', '')}  {h['status']}{why}", flush=True)

    return await follow_job(client, job_id, seconds, show)


def _ended_ok(meta: dict[str, Any]) -> int:
    return 0 if meta[JobMetaKey.STATUS] == RunStatus.FINISHED_COMPLETED else EXIT_REFUSED


async def _run(args: argparse.Namespace) -> int:
    from cellnet.admin._connect import admin_client

    async with admin_client(args.kit, host=args.host, port=args.port, timeout=args.timeout,
                            request_timeout=max(args.timeout, 30.0)) as client:
        if args.action == "submit":
            from cellnet._progress import showing_transfers

            with showing_transfers("uploading the job"):  # big job folders travel as streams
                sub = await client.submit(args.folder, submit_token=args.token)
            verb = "submitted" if sub["created"] else "already submitted (same token)"
            _out(args, sub, f"{verb}: job {sub['job_id']}" + "".join(
                f"\nwarning: {w}" for w in sub.get("warnings", [])))
            if args.wait is None:
                return 0
            meta = await _follow(client, sub["job_id"], args.wait, args.json)
            _out(args, meta, f"job {sub['job_id']} ended: {meta[JobMetaKey.STATUS]}")
            return _ended_ok(meta)
        if args.action == "list":
            jobs = await client.list_jobs()
            _out(args, jobs, "\n".join(f"{j['job_id']}  {j['status']:<28} {j.get('name') or ''}"
                                       for j in jobs) or "(no jobs)")
            return 0
        if args.action == "status":
            if args.wait is not None:
                meta = await _follow(client, args.job_id, args.wait, True)
            else:
                meta = await client.get_meta(args.job_id)
            submitter = "/".join(str(meta.get(k) or "-") for k in (
                JobMetaKey.SUBMITTER_NAME, JobMetaKey.SUBMITTER_ORG, JobMetaKey.SUBMITTER_ROLE))
            _out(args, meta, f"job {args.job_id}: {meta[JobMetaKey.STATUS]}"
                 f" ({meta.get(STATUS_REASON) or ''}); submitted by {submitter}")
            return _ended_ok(meta) if args.wait is not None else 0
        if args.action == "abort":
            status = await client.abort(args.job_id)
            _out(args, {"job_id": args.job_id, "status": status}, f"job {args.job_id}: {status}")
            return 0
        errors = await client.show_errors(args.job_id)
        _out(args, errors, "\n".join(f"[{e.get('time_iso', '')}] {e.get('site')}: "
                                     f"{str(e.get('error')).strip()}" for e in errors)
             or "(no errors)")
        return 0


def _fail(message: str, status: int) -> int:
    print(f"cellnet job: {message}", file=sys.stderr, flush=True)
    return status


def job_main(argv: Sequence[str] | None = None) -> int:
    """``cellnet job ...``; returns the exit status (see the module docstring)."""
    args = build_parser().parse_args(argv)
    if not args.timeout > 0 or (getattr(args, "wait", None) is not None and not args.wait > 0):
        return _fail("--timeout and --wait must be positive numbers of seconds", EXIT_USAGE)
    t0 = time.monotonic()
    try:
        return trio.run(_run, args)
    except BaseException as group:  # unwrap, classify, re-raise the rest
        exc = unwrap_group(group)
        if isinstance(exc, AuthError):
            return _fail(f"authentication refused: {exc}", EXIT_AUTH)
        if isinstance(exc, LinkError):
            return _fail(str(exc), EXIT_UNREACHABLE)
        if isinstance(exc, JobError):  # refused by the server (validation problems listed)
            return _fail(str(exc), EXIT_REFUSED)
        if isinstance(exc, ProvisionError | OSError | ValueError):
            return _fail(str(exc), EXIT_USAGE)
        if isinstance(exc, trio.TooSlowError):
            return _fail(f"gave up after {time.monotonic() - t0:.1f} s", EXIT_REFUSED)
        raise
