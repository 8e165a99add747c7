"""hello-numpy-agent workflow: send "train" for N rounds and average the sites' weights.

A deliberately tiny FedAvg (weights from each result's NUM_STEPS_CURRENT_ROUND)
so the example stands alone; a failed site fails the job with its error.
"""

import numpy as np

from cellnet.defs import MetaKey
from cellnet.errors import JobError
from cellnet.fl import DXO, DataKind
from cellnet.fl.runtime import Controller, Task


class AddOneWorkflow(Controller):
    def __init__(self, num_rounds: int = 3, size: int = 4, task_timeout: float = 60.0) -> None:
        self.num_rounds = num_rounds
        self.size = size
        self.task_timeout = task_timeout

    async def control_flow(self, fl_ctx):
        weights = {"w": np.zeros(self.size, np.float32)}
        history = []
        for rnd in range(self.num_rounds):
            meta = {MetaKey.CURRENT_ROUND: rnd, MetaKey.TOTAL_ROUND: self.num_rounds}
            task = Task("train", DXO(DataKind.WEIGHTS, weights, meta), timeout=self.task_timeout)
            results = await self.broadcast_and_wait(task, min_responses=len(self.clients),
                                                    fl_ctx=fl_ctx)
            failed = {site: r for site, r in results.items() if not r.ok}
            if failed:
                lines = [f"{site}: {r.rc}: {r.error}" for site, r in failed.items()]
                raise JobError(f"round {rnd}: training failed on {len(failed)} site(s):\n"
                               + "\n".join(lines))
            steps = {s: float(r.dxo.get_meta(MetaKey.NUM_STEPS_CURRENT_ROUND, 1))
                     for s, r in results.items()}
            total = sum(steps.values())
            weights = {name: sum(r.dxo.data[name].astype(np.float64) * steps[s]
                                 for s, r in results.items()) / total
                       for name in weights}
            weights = {k: v.astype(np.float32) for k, v in weights.items()}
            history.append({s: r.dxo.get_meta("metrics") for s, r in results.items()})
        return {"weights": {k: v.tolist() for k, v in weights.items()},
                "rounds": self.num_rounds, "metrics": history}
