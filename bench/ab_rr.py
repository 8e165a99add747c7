"""A/B of a code change on request/reply rates, both variants in one run on one link.

A diagnostic for changes too small to see between two bench runs on a noisy
shared machine (the VM drifts more than many a real improvement is worth).
Guard the change with a module-level flag list, e.g. in ``cellnet/link.py``::

    AB = [True]           # temporary: remove before committing
    ...
    if AB[0]:
        new way
    else:
        old way

then run::

    python bench/ab_rr.py cellnet.link.AB --topic echo_sync --rounds 16 --where both

Rounds alternate (on, off / off, on), each ``--n`` requests with ``--in-flight``
requests in flight, between this process's ``server`` cell and a ``site-1`` cell
in a child process; ``--where`` says which side's flag is toggled (the other
stays on).  It prints both medians, their ratio and how many rounds the flag
won: a ratio outside about +-3 % with 12 or more wins of 16 is a real effect.
"""

from __future__ import annotations

import argparse
import importlib
import multiprocessing as mp
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import trio

CHANNEL = "bench"


def _flag(path: str) -> list:
    module, name = path.rsplit(".", 1)
    flag = getattr(importlib.import_module(module), name)
    if not isinstance(flag, list) or not flag:
        raise SystemExit(f"{path} must be a module-level list like [True]")
    return flag


async def _peer(kit: str, port: int, flag_path: str) -> None:
    from cell_peer import _echo, _echo_await, _echo_sync

    from cellnet.cell import Cell
    from cellnet.transport import open_link_stream

    flag = _flag(flag_path)

    def set_flag(msg) -> None:
        flag[0] = bytes(msg.payload) == b"1"

    async with Cell("site-1") as site:
        for topic, fn in (("echo", _echo), ("echo_sync", _echo_sync),
                          ("echo_await", _echo_await), ("flag", set_flag)):
            site.register_request_cb(CHANNEL, topic, fn)
        peer = await open_link_stream("127.0.0.1", port, kit, my_fqcn="site-1",
                                      expected_peer="server")
        link = await site.add_link(peer.stream, peer.fqcn)
        await link.finished.wait()


def peer_main(kit: str, port: int, flag_path: str) -> None:
    trio.run(_peer, kit, port, flag_path)


async def _measure(kits: Path, args: argparse.Namespace) -> dict[bool, list[float]]:
    from bench_cell import _rr, linked_site

    flag = _flag(args.flag)
    spawn = mp.get_context("spawn")

    def peer(port: int) -> mp.Process:
        return spawn.Process(target=peer_main, args=(str(kits / "site-1"), port, args.flag),
                             daemon=True)

    rates: dict[bool, list[float]] = {True: [], False: []}
    async with linked_site(kits, peer) as (cell, _):
        await _rr(cell, 1000, 1, args.topic)  # warm up
        for r in range(args.rounds):
            for on in (True, False) if r % 2 else (False, True):
                flag[0] = on if args.where in ("client", "both") else True
                peer_on = on if args.where in ("peer", "both") else True
                await cell.send_request("site-1", CHANNEL, "flag", b"1" if peer_on else b"0")
                n = args.n * args.in_flight
                rates[on].append(await _rr(cell, n, args.in_flight, args.topic))
    return rates


def main() -> None:
    from cellnet.security.local import provision_local

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("flag", help="module.NAME of a flag list, e.g. cellnet.link.AB")
    ap.add_argument("--topic", default="echo_sync", choices=("echo", "echo_sync", "echo_await"))
    ap.add_argument("--rounds", type=int, default=16)
    ap.add_argument("--n", type=int, default=1500, help="requests per in-flight slot a round")
    ap.add_argument("--in-flight", type=int, default=1)
    ap.add_argument("--where", default="both", choices=("client", "peer", "both"))
    args = ap.parse_args()
    _flag(args.flag)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        provision_local(root, "bench", ["site-1"], host="localhost")
        rates = trio.run(_measure, root / "kits", args)
    on, off = statistics.median(rates[True]), statistics.median(rates[False])
    wins = sum(a > b for a, b in zip(rates[True], rates[False], strict=True))
    print(f"{args.topic}, {args.in_flight} in flight, flag toggled on {args.where}: "
          f"on {on:,.0f}/s  off {off:,.0f}/s  ratio {on / off:.3f}  on won {wins}/{args.rounds}")


if __name__ == "__main__":
    main()
