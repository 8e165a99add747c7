"""``cellnet simulate``: run a job on a throw-away federation on this machine.

A fresh project is provisioned (its own CA, one kit per participant); the
server and N sites run as cells in this process over real mutual-TLS links on
127.0.0.1, and every job cell runs in a child process exactly as in
production.  The job is submitted, its status changes are printed as they
happen, an FL workflow's progress (rounds done, sites that answered this
round, latest metrics, as the server job cell reports it) is drawn as a
progress bar, and at the end the command prints the results, the final
model when the workflow saved one (small models in full), and where the
workspace, models and logs are.  Exit status: 0 when the job finished COMPLETED, 1
when it ended otherwise, 2 for bad arguments.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pathlib
import pprint
import sys
import time
from collections.abc import Sequence
from typing import Any

import trio

from cellnet.defs import JobMetaKey, RunStatus
from cellnet.errors import CellnetError, unwrap_group


def _find_example(name: str) -> pathlib.Path | None:
    """examples/<name> of the source checkout (current directory or the package's parent)."""
    from cellnet._checkout import find_in_checkout

    return find_in_checkout(f"examples/{name}", "meta.json")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="cellnet simulate",
        description="Run a job folder on a throw-away federation of this machine: a server "
        "and N sites over mutual TLS on 127.0.0.1, job cells as child processes.",
    )
    p.add_argument("job", nargs="?", help="job folder (meta.json + one folder per app)")
    p.add_argument("--example", metavar="NAME", help="run examples/NAME of the source checkout")
    p.add_argument("-n", "--sites", type=int, default=2, metavar="N",
                   help="number of sites, named site-1 ... site-N (default 2)")
    p.add_argument("--workspace", metavar="DIR",
                   help="where kits, job data and logs go (default: ./simulate/<time>)")
    p.add_argument("--resources", default='{"slots": 4}', metavar="JSON",
                   help="what each site offers to jobs' resource_spec (default: "
                   '\'{"slots": 4}\')')
    p.add_argument("--timeout", type=float, default=600.0, metavar="SECONDS",
                   help="give up when the job has not ended after this long (default 600)")
    return p


def _say(text: str) -> None:
    print(f"cellnet simulate: {text}", flush=True)


async def _run(job: pathlib.Path, n_sites: int, root: pathlib.Path, timeout: float,
               resources: dict[str, float]) -> int:
    from cellnet.fl import JobStore
    from cellnet.fl.runtime import JobClient, ServerRunner, SiteRunner
    from cellnet.node import CellNode
    from cellnet.security.local import provision_local
    from cellnet.transport import Backoff
    from cellnet.workspace import Workspace

    sites = [f"site-{i}" for i in range(1, n_sites + 1)]
    kits = provision_local(root / "project", "simulate", sites)
    _say(f"provisioned a project with {n_sites} site(s): {kits}")
    backoff = Backoff(base=0.05, cap=0.5)
    async with contextlib.AsyncExitStack() as stack:
        server = await stack.enter_async_context(CellNode(kits / "server", listen=("127.0.0.1", 0)))
        await stack.enter_async_context(ServerRunner(server, JobStore(root / "server" / "jobs"),
                                                     workspace=root / "server" / "run",
                                                     known_sites=sites))
        _say("server listening on {}:{}".format(*server.address))
        for name in sites:
            node = await stack.enter_async_context(
                CellNode(kits / name, connect=server.address, backoff=backoff))
            runner = await stack.enter_async_context(
                SiteRunner(node, resources, workspace=root / name))
            with trio.fail_after(30):
                await runner.login()
        _say(f"sites linked and logged in: {', '.join(sites)}")
        admin = await stack.enter_async_context(
            CellNode(kits / sites[0], f"{sites[0]}--admin", connect=server.address,
                     backoff=backoff))
        await admin.wait_connected(30)
        client = JobClient(admin.cell)
        from cellnet._progress import showing_transfers

        # a big job folder travels as a stream
        with showing_transfers("cellnet simulate: uploading the job", sys.stdout):
            sub = await client.submit(job)
        job_id = sub["job_id"]
        _say(f"submitted {job.name} as job {job_id}")
        meta = await _follow(client, job_id, timeout, _Progress(sys.stdout.isatty()))
        status = meta[JobMetaKey.STATUS]
        _say(f"job {job_id} ended: {status}")
        if status != RunStatus.FINISHED_COMPLETED:
            for err in await client.show_errors(job_id):
                _say(f"error from {err.get('site')}: {str(err.get('error')).strip()}")
        results = await client.get_results(job_id)
        if results is not None:
            _show_results(results)
            _show_model(results)
    _say(f"workspace: {root}")
    ws = Workspace(root)
    _say(f"logs: {ws.log_path} (audit: {ws.audit_path})")
    return 0 if status == RunStatus.FINISHED_COMPLETED else 1


def _short(reason: Any) -> str:
    """A status reason on one line: a traceback's last line (its exception) and who sent it."""
    text = str(reason)
    if "Traceback (most recent call last)" not in text:
        return text
    who = text.split(":", 1)[0] if ": Traceback" in text else ""
    last = [x for x in text.strip().splitlines() if x.strip()][-1].strip()
    return f"{who}: {last}" if who else last


class _Progress:
    """Draws workflow progress: one bar redrawn in place on a terminal, a line per change else."""

    WIDTH = 24

    def __init__(self, tty: bool) -> None:
        self.tty, self.last, self.drawn = tty, "", False

    @staticmethod
    def line(doc: dict[str, Any]) -> str:
        total = max(int(doc.get("num_rounds") or 1), 1)
        done = min(max(int(doc.get("rounds_done") or 0), 0), total)
        fill = round(_Progress.WIDTH * done / total)
        bar = "#" * fill + "-" * (_Progress.WIDTH - fill)
        text = (f"[{bar}] {done}/{total} {doc.get('unit') or 'rounds'}  sites answered "
                f"{doc.get('sites_answered', 0)}/{doc.get('sites_total', '?')}")
        metrics = doc.get("metrics") or {}
        if metrics:
            text += "  " + " ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())
                                    if isinstance(v, int | float))
        return text

    def show(self, doc: dict[str, Any] | None) -> None:
        if not doc:
            return
        text = self.line(doc)
        if text == self.last:
            return
        self.last = text
        if self.tty:
            print(f"\r{text}", end="", flush=True)
            self.drawn = True
        else:
            _say(f"  progress {text}")

    def clear(self) -> None:
        if self.drawn:
            print(flush=True)
            self.drawn = False


async def _follow(client: Any, job_id: str, timeout: float,
                  progress: _Progress | None = None) -> dict[str, Any]:
    """Print each status change with its time (and the progress bar); return the final meta."""
    from cellnet.admin.job_cli import follow_job

    t0 = time.monotonic()
    bar = progress or _Progress(False)

    async def show(new: list[dict[str, Any]], ended: bool) -> None:
        if new:
            bar.clear()
        for k, entry in enumerate(new):
            if ended and k == len(new) - 1:  # the last progress came before the end
                bar.show(await client.get_progress(job_id))
                bar.clear()
            reason = f" ({_short(entry['reason'])})" if entry.get("reason") else ""
            _say(f"  {time.monotonic() - t0:6.1f} s  {entry.get('status')}{reason}")
        if not ended:
            bar.show(await client.get_progress(job_id))

    return await follow_job(client, job_id, timeout, show)


def _parts(results: Any) -> list[tuple[str, dict[str, Any]]]:
    """The results and, for a sequence of workflows, each workflow's own results."""
    if not isinstance(results, dict):
        return []
    return [("", results), *((k, v) for k, v in results.items() if isinstance(v, dict))]


def _rounds(part: dict[str, Any]) -> list[dict[str, Any]] | None:
    rounds = part.get("rounds")
    if isinstance(rounds, list) and rounds and all(isinstance(r, dict) for r in rounds):
        return rounds
    return None


def _round_line(r: dict[str, Any]) -> str:
    line = f"  round {r.get('round')}: {len(r.get('contributors') or ())} result(s)"
    if isinstance(r.get("seconds"), int | float):
        line += f" in {r['seconds']:.2f} s"
    if isinstance(r.get("aggregate_seconds"), int | float):
        line += f" (aggregation {r['aggregate_seconds']:.3f} s)"
    metrics = r.get("metrics") or {}
    line += "".join(f" {k}={v:.4g}" for k, v in sorted(metrics.items())
                    if isinstance(v, int | float))
    for what in ("rejected", "failed"):
        if r.get(what):
            line += f" {what}: {r[what]}"
    return line


def _show_results(results: Any) -> None:
    """The results: a workflow's rounds one line each, a cross-site table as text."""

    def brief(part: Any) -> Any:
        if not isinstance(part, dict):
            return part
        return {k: brief(v) for k, v in part.items()
                if not (k == "rounds" and _rounds(part))
                and not (k in ("text", "table") and isinstance(part.get("text"), str))}

    text = pprint.pformat(brief(results), width=100, compact=True)
    _say("results:")
    print(text if len(text) < 4000 else text[:4000] + "\n...", flush=True)
    for name, part in _parts(results):
        rounds = _rounds(part)
        if rounds:
            _say(f"rounds of {name}:" if name else "rounds:")
            for r in rounds:
                print(_round_line(r), flush=True)
        table = part.get("cross_site_eval")
        if isinstance(table, dict) and isinstance(table.get("text"), str):
            _say("cross-site evaluation (rows: models, columns: sites that evaluated them):")
            print(table["text"], flush=True)


def _show_model(results: Any) -> None:
    """Print the final model a workflow saved: in full when small, else names and shapes."""
    import numpy as np

    from cellnet.fl.persistor import load_npz

    for _name, part in _parts(results):
        path = part.get("final_model")
        if not isinstance(path, str) or not pathlib.Path(path).is_file():
            continue
        model = load_npz(path)
        _say(f"final model ({path}):")
        small = sum(a.size for a in model.values()) <= 100
        with np.printoptions(threshold=1000, linewidth=100):
            for key, a in model.items():
                print(f"{key} =\n{a}" if small else f"{key}: {a.dtype}{list(a.shape)}",
                      flush=True)
        if part.get("best_model"):
            _say(f"best model: {part['best_model']}")
        _say(f"models of every round: {pathlib.Path(path).parent}")


def simulate_main(argv: Sequence[str] | None = None) -> int:
    """``cellnet simulate``; returns the exit status."""
    args = build_parser().parse_args(argv)
    if (args.job is None) == (args.example is None):
        print("cellnet simulate: give a job folder or --example NAME", file=sys.stderr)
        return 2
    if args.example is not None:
        job = _find_example(args.example)
        if job is None:
            print(f"cellnet simulate: no example {args.example!r} (run from a cellnet "
                  "source checkout)", file=sys.stderr)
            return 2
    else:
        job = pathlib.Path(args.job)
    if not (job / "meta.json").is_file():
        print(f"cellnet simulate: {job} is not a job folder (no meta.json)", file=sys.stderr)
        return 2
    if not 1 <= args.sites <= 64:
        print("cellnet simulate: -n must be between 1 and 64", file=sys.stderr)
        return 2
    try:
        resources = json.loads(args.resources)
        if not isinstance(resources, dict) or not all(
            isinstance(v, int | float) for v in resources.values()
        ):
            raise ValueError("an object of numbers")
    except ValueError as exc:
        print(f"cellnet simulate: --resources must be a JSON object of numbers: {exc}",
              file=sys.stderr)
        return 2
    root = pathlib.Path(args.workspace or pathlib.Path("simulate") / time.strftime("%Y%m%d-%H%M%S"))
    root = root.resolve()
    from cellnet.workspace import Workspace

    ws = Workspace(root)
    with ws.open_logs():  # creates the folder
        try:
            return trio.run(_run, job.resolve(), args.sites, root, args.timeout, resources)
        except BaseException as group:
            exc = unwrap_group(group)
            if isinstance(exc, trio.TooSlowError):
                print(f"cellnet simulate: the job did not end within {args.timeout:g} s; "
                      f"logs in {ws.log_path}", file=sys.stderr)
                return 1
            if isinstance(exc, CellnetError):
                print(f"cellnet simulate: {type(exc).__name__}: {exc}", file=sys.stderr)
                return 1
            raise


