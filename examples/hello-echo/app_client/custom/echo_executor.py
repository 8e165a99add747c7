"""hello-echo executor: answer 'echo' with the task's arrays scaled, tagged with the site name."""

from cellnet.defs import FLContextKey
from cellnet.fl.runtime import Executor


class EchoExecutor(Executor):
    def __init__(self, scale: float = 1.0) -> None:
        self.scale = scale

    def execute(self, task_name, dxo, fl_ctx, abort_signal):
        peer = fl_ctx.get_peer_context()
        data = {k: v * self.scale for k, v in dxo.data.items()}
        meta = {"site": fl_ctx.get_prop(FLContextKey.CLIENT_NAME),
                "peer_job": peer.get_job_id() if peer is not None else None}
        return dxo.replace(data=data, meta=meta)
