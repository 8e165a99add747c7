"""Embed a third cell in a script: connect with a site kit, ask the server and a site who they are.

Run a server and a site first (two terminals, see README "Running a network"):

    cellnet run kits/server --workspace ws/server
    cellnet run kits/site-1 --workspace ws/site-1

then:

    python examples/embed_cell.py kits/site-1

The script's cell is ``site-1--probe`` (an agent name: site-1's certificate
vouches for it) and hangs under the server, so it reaches every cell the
server can route to.  It prints each reply and exits 1 if any failed.
"""

from __future__ import annotations

import argparse
import sys

import trio

from cellnet.node import NODE_CHANNEL, CellNode, NodeTopic, json_payload
from cellnet.security import StartupKit


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("kit", help="a site startup kit folder")
    p.add_argument("--name", default="probe", help="agent id: the cell is <site>--<name>")
    p.add_argument("--host", help="server address (default: from the kit)")
    p.add_argument("--port", type=int, help="server port (default: from the kit)")
    p.add_argument("--targets", nargs="+", help="cells to ask (default: server and the kit's site)")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the server")
    return p.parse_args(argv)


async def probe(args: argparse.Namespace) -> int:
    kit = StartupKit.load(args.kit)
    address = (args.host or kit.server.host, args.port or kit.server.fl_port)
    targets = args.targets or [kit.server.name, kit.name]
    failures = 0
    async with CellNode(kit, f"{kit.name}--{args.name}", connect=address) as node:
        await node.wait_connected(timeout=args.timeout)
        print(f"{node.fqcn} linked to {node.uplink} at {address[0]}:{address[1]}")
        for target in targets:
            echo = await node.cell.send_request(
                target, NODE_CHANNEL, NodeTopic.ECHO, b"hello " + target.encode(), timeout=5
            )
            info = await node.cell.send_request(target, NODE_CHANNEL, NodeTopic.INFO, timeout=5)
            if echo.return_code != "ok" or info.return_code != "ok":
                failures += 1
                print(f"{target}: FAILED echo={echo.return_code} info={info.return_code} "
                      f"({echo.error or info.error})")
                continue
            doc = json_payload(info)
            print(f"{target}: echo={bytes(echo.payload).decode()!r} peers={doc['peers']} "
                  f"uptime={doc['uptime']:.1f}s pid={doc['pid']}")
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    return trio.run(probe, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
