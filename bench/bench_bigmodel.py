"""One large float32 model site -> server over the cell network (mTLS loopback, two processes).

Issue 4's benchmark.  A ``site-1`` process sends a 1 GiB (quick: 64 MiB)
float32 model -- a mapping of 256 arrays -- to a ``server`` process with
``send_request``; both cells run as in production (provisioned kits,
``serve_links`` / ``open_link_stream``, mutual TLS 1.3).  Figures, each beside
a baseline from the same run:

* MB/s of the model (median of three sends, each timed to its reply, after
  a first one whose receive buffer is fresh memory -- the kernel faults and
  zeroes a gigabyte of pages, at a fraction of the link's speed on this VM --
  shown on a row of its own; later rounds reuse the released buffer, as a
  federated job receiving a model of the same size every round does) against the
  raw TLS ceiling measured two ways between two processes: stock
  ``trio.SSLStream`` both ends, and our ``TLSStream`` -- a hand-driven
  ``ssl.MemoryBIO`` over a trio socket that reads 1 MiB of ciphertext at a
  time and decrypts every buffered record per read -- receiving into a
  reused 1 MiB buffer (``bench_tls``'s peers).  Target: 0.7x the better one;
* peak RSS growth of the sender and of the receiver (maxrss at the end minus
  the peak before the transfers; the sender's includes building the model)
  against payload + 64 MiB;
* the receiver of 8 concurrent updates aggregated in time (received into a
  ``TensorAccumulatorSink``): peak RSS growth against one model + 64 MiB
  (besides the running sum it stages at most one tensor per stream: a tensor
  is folded only once its CRC holds);
* latency of a 100-byte request on the same link while a model is being
  streamed (median and 95th percentile) against the 20 ms budget.
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import tempfile
from pathlib import Path

from bench_tls import _median as tls_bulk_seconds
from bigmodel_peer import quantile, server_main, site_main
from common import Row

from cellnet.security.local import provision_local

GROUP = "bigmodel"
MiB = 1 << 20
N_TENSORS = 256  # 4 MiB tensors (1 GiB model); in-time aggregation stages one per stream
N_UPDATES = 8


def _pair(kits: Path, task: str, total: int, repeat: int) -> tuple[dict, dict]:
    """Run a server and a site process for one task; their reports."""
    spawn = mp.get_context("spawn")
    s_parent, s_child = spawn.Pipe()
    c_parent, c_child = spawn.Pipe()
    server = spawn.Process(target=server_main, args=(str(kits / "server"), s_child, N_TENSORS),
                           daemon=True)
    server.start()
    site = None
    try:
        if not s_parent.poll(60):
            raise RuntimeError("server process did not start")
        port = s_parent.recv()
        site = spawn.Process(target=site_main, daemon=True, args=(
            str(kits / "site-1"), port, c_child, task, total, N_TENSORS, repeat, N_UPDATES))
        site.start()
        for _ in range(900):
            if c_parent.poll(1) or not site.is_alive():
                break
        if not c_parent.poll(0):
            raise RuntimeError(f"site process did not finish the {task!r} task")
        site_out = c_parent.recv()
        s_parent.send("stop")
        if not s_parent.poll(60):
            raise RuntimeError("server process did not report")
        return site_out, s_parent.recv()
    finally:
        for proc in (site, server):
            if proc is not None:
                proc.join(10)
                if proc.is_alive():
                    proc.kill()
                    proc.join()


def measure(quick: bool) -> dict:
    total = (64 if quick else 1024) * MiB
    repeat = 4  # the first send fills a fresh receive buffer; the others reuse it
    with tempfile.TemporaryDirectory(prefix="bench-bigmodel-") as tmp:
        root = Path(tmp)
        provision_local(root, "bench", ["site-1"], host="localhost")
        kits = root / "kits"
        ceil = {m: total / tls_bulk_seconds(kits, m, "bulk", total, repeat) / 1e6
                for m in ("sslstream", "tlsstream")}
        send_site, send_server = _pair(kits, "send", total, repeat)
        agg_site, agg_server = _pair(kits, "aggregate", total, repeat)
    assert agg_server["folded"] == N_UPDATES, agg_server
    return {"total": total, "ceil": ceil, "send_site": send_site, "send_server": send_server,
            "agg_site": agg_site, "agg_server": agg_server}


def run(quick: bool) -> list[Row]:
    m = measure(quick)
    total, ceil = m["total"], m["ceil"]
    size = f"{total // MiB} MiB"
    times = m["send_site"]["times"]
    mbps = total / statistics.median(times[1:]) / 1e6
    cold = total / times[0] / 1e6
    best_name = "TLSStream (MemoryBIO, 1 MiB reads)" if ceil["tlsstream"] >= ceil["sslstream"] \
        else "stock trio.SSLStream"
    budget = (total + 64 * MiB) / MiB

    def grown(report: dict) -> float:
        return (report["peak"] - report["base"]) / MiB

    lat = [x * 1e3 for x in m["send_site"]["latency"]]
    agg_mbps = N_UPDATES * total / m["agg_site"]["times"][0] / 1e6
    return [
        Row(GROUP, f"{size} model site->server", mbps, "MB/s",
            f"best raw TLS: {best_name}", max(ceil.values()), ">= 0.7x"),
        Row(GROUP, f"{size} model site->server (vs stock)", mbps, "MB/s",
            "stock trio.SSLStream bulk", ceil["sslstream"]),
        Row(GROUP, f"{size} model, first send (receive buffer not yet pooled)", cold, "MB/s",
            f"best raw TLS: {best_name}", max(ceil.values())),
        Row(GROUP, f"{N_UPDATES} x {size} updates aggregated in time", agg_mbps, "MB/s",
            f"best raw TLS: {best_name}", max(ceil.values())),
        Row(GROUP, f"sender peak RSS growth ({size} model)", grown(m["send_site"]), "MiB",
            "payload + 64 MiB", budget, "<= 1.0x"),
        Row(GROUP, f"receiver peak RSS growth ({size} model)", grown(m["send_server"]), "MiB",
            "payload + 64 MiB", budget, "<= 1.0x"),
        Row(GROUP, f"receiver peak RSS growth ({N_UPDATES} updates aggregated)",
            grown(m["agg_server"]), "MiB", "one model + 64 MiB", budget, "<= 1.0x"),
        Row(GROUP, f"100 B request during the stream, median ({len(lat)} probes)",
            statistics.median(lat), "ms", "issue budget 20 ms", 20.0, "<= 1.0x"),
        Row(GROUP, "100 B request during the stream, p95", quantile(lat, 0.95), "ms",
            "issue budget 20 ms", 20.0, "<= 1.0x"),
    ]


if __name__ == "__main__":
    import sys

    for row in run(quick="--full" not in sys.argv):
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else ""
        print(f"{row.name:<52} {row.value:>10.1f} {row.unit:<5} {row.baseline_name:<40} "
              f"{row.baseline_value:>9.1f} {ratio:>7} {row.target}")
