"""Where a 1-in-flight request/reply round trip spends its time, leg by leg, across processes.

A diagnostic, not a benchmark row: it stamps (``time.perf_counter``, one
CLOCK_MONOTONIC for every process) each ``epoll`` return, each socket read and
each socket write in both processes, then pairs the stamps up into the six legs
of a round trip::

    C.send > P.epoll > P.read > P.send > C.epoll > C.read > C.send

``C`` is the requester, ``P`` the peer; ``x.read > x.send`` is that side's own
processing, ``C.send > P.epoll`` the kernel and wake-up.  It runs the bare
``TLSStream`` ping-pong and the cell (a sync handler, an async one without
``await``, one that awaits) the same way, so the legs can be compared side by
side.  Usage::

    python bench/rr_timeline.py [--n 4000]
"""

from __future__ import annotations

import argparse
import array
import itertools
import multiprocessing as mp
import os
import pickle
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import trio

ORDER = ("C.send", "P.epoll", "P.read", "P.send", "C.epoll", "C.read")
_EPOLL, _READ, _SEND = 0, 1, 2


class Stamps:
    """Stamps of one process: patches trio's epoll wait and TLSStream's socket read/write."""

    def __init__(self) -> None:
        self.times = array.array("d")
        self.tags = array.array("b")
        self.on = False

    def install(self) -> None:
        import trio._core._io_epoll as epoll

        from cellnet.transport import tls

        stamp, clock = self._stamp, time.perf_counter
        get_events = epoll.EpollIOManager.get_events
        read_raw = tls.TLSStream._read_raw
        write_out = tls.TLSStream._write_out

        def patched_get_events(io, timeout):
            events = get_events(io, timeout)
            if events:
                stamp(_EPOLL, clock())
            return events

        async def patched_read_raw(stream):
            waited = await read_raw(stream)
            stamp(_READ, clock())
            return waited

        def patched_write_out(stream):
            stamp(_SEND, clock())
            return write_out(stream)

        epoll.EpollIOManager.get_events = patched_get_events
        tls.TLSStream._read_raw = patched_read_raw
        tls.TLSStream._write_out = patched_write_out

    def _stamp(self, tag: int, t: float) -> None:
        if self.on:
            self.times.append(t)
            self.tags.append(tag)

    def dump(self, path: str) -> None:
        with open(path, "wb") as f:
            pickle.dump((list(self.times), list(self.tags)), f)



def load_stamps(path: str) -> list[tuple[float, int]]:
    """``(time, tag)`` pairs a peer process dumped."""
    with open(path, "rb") as f:
        times, tags = pickle.load(f)
    return list(zip(times, tags, strict=True))


STAMPS = Stamps()


def _serve_stamped(out: str, target, *args) -> None:
    """A peer process: stamp everything, dump the stamps on SIGUSR1."""
    STAMPS.install()
    STAMPS.on = True

    def dump(*_):
        STAMPS.dump(out)
        os._exit(0)

    signal.signal(signal.SIGUSR1, dump)
    target(*args)


def legs(client: list[tuple[float, int]], peer: list[tuple[float, int]]) -> dict[str, float]:
    """Median microseconds of each leg, from round trips whose stamps come in exact order."""
    names = {("c", _SEND): "C.send", ("p", _EPOLL): "P.epoll", ("p", _READ): "P.read",
             ("p", _SEND): "P.send", ("c", _EPOLL): "C.epoll", ("c", _READ): "C.read"}
    events = sorted([(t, names[("c", g)]) for t, g in client] +
                    [(t, names[("p", g)]) for t, g in peer])
    want = [*ORDER, ORDER[0]]
    spans: dict[str, list[float]] = {f"{a} > {b}": [] for a, b in itertools.pairwise(want)}
    i = 0
    while i + len(want) <= len(events):
        window = events[i : i + len(want)]
        if [name for _, name in window] == want:
            for (t0, a), (t1, b) in itertools.pairwise(window):
                spans[f"{a} > {b}"].append(t1 - t0)
            i += len(want) - 1
        else:
            i += 1
    return {k: 1e6 * statistics.median(v) for k, v in spans.items() if v}


async def _cell_run(kits: Path, topic: str, n: int, out: str) -> float:
    from bench_cell import _rr, linked_site
    from cell_peer import cell_main

    spawn = mp.get_context("spawn")

    def peer(port: int) -> mp.Process:
        return spawn.Process(target=_serve_stamped,
                             args=(out, cell_main, str(kits / "site-1"), port, 0), daemon=True)

    async with linked_site(kits, peer) as (cell, proc):
        await _rr(cell, 1000, 1, topic)  # warm up
        STAMPS.on = True
        rate = await _rr(cell, n, 1, topic)
        STAMPS.on = False
        os.kill(proc.pid, signal.SIGUSR1)  # the peer dumps its stamps and exits
        await trio.to_thread.run_sync(proc.join)
    return rate


async def _ping_run(kits: Path, n: int, out: str) -> float:
    from bench_cell import _ping
    from cell_peer import raw_main

    spawn = mp.get_context("spawn")
    parent, child = spawn.Pipe()
    proc = spawn.Process(target=_serve_stamped, args=(out, raw_main, str(kits / "server"), child),
                         daemon=True)
    proc.start()
    _, ours_port = await trio.to_thread.run_sync(parent.recv)
    await _ping(kits, ours_port, False, 1000)
    STAMPS.on = True
    rate = await _ping(kits, ours_port, False, n)
    STAMPS.on = False
    os.kill(proc.pid, signal.SIGUSR1)
    await trio.to_thread.run_sync(proc.join)
    return rate


def main() -> None:
    from cellnet.security.local import provision_local

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=4000, help="round trips per run")
    args = parser.parse_args()
    STAMPS.install()
    columns: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        provision_local(root, "bench", ["site-1"], host="localhost")
        kits = root / "kits"
        out = str(root / "peer.stamps")
        runs = (("bare TLSStream", lambda: _ping_run(kits, args.n, out)),
                ("cell, sync", lambda: _cell_run(kits, "echo_sync", args.n, out)),
                ("cell, async", lambda: _cell_run(kits, "echo", args.n, out)),
                ("cell, awaits", lambda: _cell_run(kits, "echo_await", args.n, out)))
        for label, run in runs:
            STAMPS.times, STAMPS.tags = array.array("d"), array.array("b")
            rate = trio.run(run)
            column = legs(list(zip(STAMPS.times, STAMPS.tags, strict=True)), load_stamps(out))
            column["round trip (1/rate)"] = 1e6 / rate
            columns[label] = column
    keys = list(next(iter(columns.values())))
    print(f"{'leg (median us)':24s}" + "".join(f"{label:>16s}" for label in columns))
    for key in keys:
        cells = (f"{col.get(key, float('nan')):16.1f}" for col in columns.values())
        print(f"{key:24s}" + "".join(cells))


if __name__ == "__main__":
    main()
