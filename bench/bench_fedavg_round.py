"""A FedAvg round end to end: 8 sites, a 100M-parameter float32 model, loopback mutual TLS.

The federation is the ``cellnet simulate`` machinery: a server and 8 sites as
cells of this process over real mutual-TLS links on 127.0.0.1, and every
job cell (``server.<job>``, ``site-N.<job>``) a child process.  The job runs
``ScatterAndGather`` (in-time FedAvg) for a few rounds; each site returns the
model it received (no training), so a round is: send the model to 8 sites,
get 8 models back, fold each in as it arrives, finish the average.  Per-round
model files are off, so a round is only network and aggregation.

The job runs twice in the same run: results folded **in place** as their
chunks arrive (with ``low_memory``: the sent model is spilled to disk and
released while the results arrive), and as whole buffers (``in_place: false``).

Figures, each beside a baseline of this run:

* round time (median of the rounds after the first) vs the time the same
  bytes (model size x 8 sites x 2 directions) take over ONE raw blocking
  ``ssl`` socket between two processes (``bench_tls``'s sender/receiver).
  The federation's route has 3 TLS hops each way (site job cell -> site
  cell -> server cell -> server job cell), the middle two relayed by the
  one simulate process, so the table also gives the round time per hop;
* the server job cell's peak RSS vs the model size (target <= 1.5x), also
  less the RSS it had before the workflow started (interpreter and imports);
* aggregation share of the round: seconds spent folding results in and
  finishing the average, over the round time.

Full size: 100M parameters (400 MB) in 10 tensors; quick: 4M parameters
(``BENCH_FEDAVG_MPARAMS`` overrides; ``--full`` from the command line).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import statistics
import tempfile
from pathlib import Path

import trio
from bench_tls import MiB, _measure
from common import Row

from cellnet.security.local import provision_local

GROUP = "fedavg_round"
SITES = 8
HOPS = 3  # site job cell -> site cell -> server cell -> server job cell (and back)
TENSORS = 10

INIT = '''
import numpy as np

def make(params, tensors):
    per = params // tensors
    return {f"layer{i}": np.full(per, 0.5, np.float32) for i in range(tensors)}
'''

WORKFLOW = '''
import json
import resource
from pathlib import Path

from cellnet.fl.workflows import ScatterAndGather


class MeasuredSAG(ScatterAndGather):
    """ScatterAndGather that writes its rounds and the process's peak RSS to bench.json."""

    async def control_flow(self, fl_ctx):
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        start = pages * resource.getpagesize()
        out = await super().control_flow(fl_ctx)
        out["rss_start"] = start
        out["peak_rss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        out["model_bytes"] = sum(a.nbytes for a in self.model.values())
        out["in_place"] = [r["in_place"] for r in out["rounds"]]
        (Path(self.engine.app_dir).parent / "bench.json").write_text(json.dumps(out))
        return {"rounds": len(out["rounds"])}
'''

ECHO = '''
from cellnet.defs import MetaKey
from cellnet.fl import DXO, DataKind
from cellnet.fl.runtime import Executor


class Echo(Executor):
    """No training: answer with the model received (one step's weight)."""

    async def execute(self, task_name, dxo, fl_ctx, abort_signal):
        meta = {MetaKey.CURRENT_ROUND: dxo.get_meta(MetaKey.CURRENT_ROUND),
                MetaKey.NUM_STEPS_CURRENT_ROUND: 1}
        return DXO(DataKind.WEIGHTS, dxo.data, meta)
'''


def _job(root: Path, params: int, rounds: int, in_place: bool) -> Path:
    job = root / "fedavg-round"
    (job / "app" / "config").mkdir(parents=True)
    (job / "app" / "custom").mkdir()
    (job / "meta.json").write_text(json.dumps(
        {"name": "bench-fedavg-round", "deploy_map": {"app": ["@ALL"]}, "min_clients": SITES}))
    server = {"workflow": {"path": "measured.MeasuredSAG", "args": {
        "num_rounds": rounds, "train_timeout": 600, "wait_time_after_min_received": 0,
        "in_place": in_place, "low_memory": in_place,
        "persistor": {"initializer": "bench_init.make", "save_rounds": False,
                      "initializer_args": {"params": params, "tensors": TENSORS}}}}}
    client = {"executors": [{"tasks": ["train"], "executor": {"path": "echo.Echo"}}]}
    (job / "app" / "config" / "config_fed_server.json").write_text(json.dumps(server))
    (job / "app" / "config" / "config_fed_client.json").write_text(json.dumps(client))
    for name, text in (("bench_init", INIT), ("measured", WORKFLOW), ("echo", ECHO)):
        (job / "app" / "custom" / f"{name}.py").write_text(text)
    return job


def _run_job(root: Path, params: int, rounds: int, in_place: bool = True) -> dict:
    from cellnet.simulate import _run

    root.mkdir(parents=True, exist_ok=True)
    job = _job(root, params, rounds, in_place)
    quiet = logging.getLogger("cellnet")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # sites log "link lost" when the federation stops
    try:
        with contextlib.redirect_stdout(io.StringIO()) as out:
            status = trio.run(_run, job, SITES, root / "sim", 900.0, {"slots": 4})
    finally:
        quiet.setLevel(level)
    if status != 0:
        raise RuntimeError(f"the FedAvg job failed:\n{out.getvalue()[-3000:]}")
    return json.loads(next((root / "sim" / "server" / "run").glob("*/bench.json")).read_text())


def run(quick: bool) -> list[Row]:
    params = int(os.environ.get("BENCH_FEDAVG_MPARAMS", 4 if quick else 100)) * 1_000_000
    rounds = 3
    with tempfile.TemporaryDirectory(prefix="bench-fedavg-round-") as tmp:
        root = Path(tmp)
        doc = _run_job(root / "in-place", params, rounds)
        whole = _run_job(root / "whole", params, rounds, in_place=False)
        model_bytes = doc["model_bytes"]
        provision_local(root / "tls", "bench", ["site-1"], host="localhost")
        tls_bytes = max(128 * MiB, (model_bytes // MiB) * MiB)
        tls_seconds = statistics.median(
            _measure(root / "tls" / "kits", "blocking", "bulk", tls_bytes) for _ in range(3))
    assert all(doc["in_place"]) and not any(whole["in_place"])
    moved = model_bytes * SITES * 2
    raw_round = tls_seconds * moved / tls_bytes

    def median(d: dict, key: str) -> float:
        later = d["rounds"][1:] or d["rounds"]
        return statistics.median(r[key] for r in later)

    round_s, agg_s = median(doc, "seconds"), median(doc, "aggregate_seconds")
    size = f"{params // 1_000_000}M float32, {SITES} sites"
    return [
        Row(GROUP, f"round time ({size}), in-place", round_s, "s",
            "8x model out + 8x back over 1 raw blocking TLS hop", raw_round, "<= 2.0x"),
        Row(GROUP, f"round time per TLS hop (route: {HOPS} hops each way)", round_s / HOPS,
            "s", "same bytes over 1 raw blocking TLS hop", raw_round, "<= 2.0x"),
        Row(GROUP, "round time, in-place", round_s, "s", "whole-buffer results (same run)",
            median(whole, "seconds"), "<= 1.0x"),
        Row(GROUP, f"round throughput ({size}, both directions)", moved / round_s / 1e9, "GB/s",
            "raw blocking TLS, one stream", tls_bytes / tls_seconds / 1e9, ">= 0.5x"),
        Row(GROUP, "server job cell peak RSS, in-place", doc["peak_rss"] / 1e6, "MB",
            "model size", model_bytes / 1e6, "<= 1.5x"),
        Row(GROUP, "server job cell peak RSS above its start (imports), in-place",
            (doc["peak_rss"] - doc["rss_start"]) / 1e6, "MB", "model size", model_bytes / 1e6,
            "<= 1.5x"),
        Row(GROUP, "server job cell peak RSS, whole-buffer results", whole["peak_rss"] / 1e6,
            "MB", "model size", model_bytes / 1e6, ""),
        Row(GROUP, "aggregation time in the round, in-place", agg_s, "s", "round time",
            round_s, "<= 0.2x"),
        Row(GROUP, "aggregation time in the round, whole-buffer", median(whole,
            "aggregate_seconds"), "s", "round time", median(whole, "seconds"), "<= 0.2x"),
    ]


if __name__ == "__main__":
    import sys

    for row in run(quick="--full" not in sys.argv):
        ratio = f"{row.ratio:.2f}x" if row.ratio is not None else ""
        print(f"{row.name:<50} {row.value:>10.3f} {row.unit:<6} {ratio} {row.target}")
