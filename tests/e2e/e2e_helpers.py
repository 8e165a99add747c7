"""Helpers of the e2e tests: provisioned kits, `cellnet run` processes, embedded probe cells."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import trio

from cellnet.node import NODE_CHANNEL, CellNode, NodeTopic, json_payload
from cellnet.security.local import provision_local
from cellnet.transport import Backoff

HOST = "127.0.0.1"
REPO = Path(__file__).resolve().parents[2]



def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def make_kits(root: Path, name: str) -> Path:
    return provision_local(root, name, ("site-1", "site-2", "site-3"),
                           fl_port=free_port(), admin_port=free_port())


class Proc:
    """One `cellnet run` process in its own process group, output captured to files."""

    def __init__(self, args: list[str], workdir: Path, name: str) -> None:
        workdir.mkdir(parents=True, exist_ok=True)
        self.name = name
        self.out_path = workdir / f"{name}.out"
        self.err_path = workdir / f"{name}.err"
        with open(self.out_path, "wb") as out, open(self.err_path, "wb") as err:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "cellnet.cli", "run", *args],
                stdout=out, stderr=err, stdin=subprocess.DEVNULL, start_new_session=True,
                cwd=workdir,
            )

    @property
    def out(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def err(self) -> str:
        return self.err_path.read_text(errors="replace")

    def wait_for_output(self, text: str, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.out:
            if self.popen.poll() is not None:
                raise AssertionError(f"{self.name} exited ({self.popen.returncode}): {self.err}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name}: no {text!r} in {timeout}s: {self.err}")
            time.sleep(0.05)

    def signal(self, signum: int) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signum)

    def wait(self, timeout: float) -> int:
        return self.popen.wait(timeout)

    def kill(self) -> None:
        """Kill the whole process group (the cell and its child cells)."""
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait(10)


class Procs:
    """Starts processes for a test and kills every one of them at teardown."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.started: list[Proc] = []

    def run(self, kit: Path, *args: str, name: str | None = None) -> Proc:
        name = name or f"{kit.name}-{len(self.started)}"
        ws = self.workdir / "ws" / name
        proc = Proc([str(kit), "--workspace", str(ws), *args], self.workdir, name)
        proc.workspace = ws
        self.started.append(proc)
        return proc

    def cleanup(self) -> None:
        for proc in self.started:
            proc.kill()


def probe(kit: Path, fqcn: str, port: int, **kw) -> CellNode:
    """An embedded cell of the test process linking to the server at 127.0.0.1:``port``."""
    kw.setdefault("backoff", Backoff(base=0.05, cap=0.5))
    return CellNode(kit, fqcn, connect=(HOST, port), **kw)


async def info(node: CellNode, target: str, timeout: float = 5.0) -> dict | None:
    reply = await node.cell.send_request(target, NODE_CHANNEL, NodeTopic.INFO, timeout=timeout)
    return json_payload(reply) if reply.return_code == "ok" else None


async def stats(node: CellNode, target: str) -> dict:
    reply = await node.cell.send_request(target, NODE_CHANNEL, NodeTopic.STATS, timeout=5)
    assert reply.return_code == "ok", reply
    return json_payload(reply)


async def wait_peers(node: CellNode, target: str, peers: set[str], timeout: float = 20.0) -> dict:
    """Poll ``target``'s info until it is linked to every cell of ``peers``."""
    with trio.fail_after(timeout):
        while True:
            doc = await info(node, target, timeout=2)
            if doc is not None and peers <= set(doc["peers"]):
                return doc
            await trio.sleep(0.05)
