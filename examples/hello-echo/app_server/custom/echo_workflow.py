"""hello-echo workflow: broadcast one 'echo' task to every site and report what came back."""

import numpy as np

from cellnet.fl import DXO, DataKind
from cellnet.fl.runtime import Controller, Task


class EchoWorkflow(Controller):
    def __init__(self, timeout: float = 20.0, probe_unknown: bool = False) -> None:
        self.timeout = timeout
        self.probe_unknown = probe_unknown

    async def control_flow(self, fl_ctx):
        data = DXO(DataKind.WEIGHTS, {"x": np.arange(8, dtype=np.float32)}, {"round": 1})
        task = Task("echo", data, timeout=self.timeout)
        results = await self.broadcast_and_wait(task, min_responses=len(self.clients),
                                                fl_ctx=fl_ctx)
        out = {"echo": {}}
        for site, r in results.items():
            entry = {"rc": r.rc}
            if r.ok:
                entry["x"] = [float(v) for v in r.dxo.data["x"]]
                entry["site"] = r.dxo.get_meta("site")
                entry["peer_job"] = r.dxo.get_meta("peer_job")
            out["echo"][site] = entry
        if self.probe_unknown:
            probe = await self.send_and_wait(Task("no-such-task", data), self.clients[0])
            out["unknown"] = probe.rc
        return out
