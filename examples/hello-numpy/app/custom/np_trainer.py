"""hello-numpy trainer: "training" adds ``delta`` to every weight, so the result is exact."""

import numpy as np

from cellnet.defs import MetaKey
from cellnet.fl import DXO, DataKind
from cellnet.fl.runtime import Executor


class NPTrainer(Executor):
    def __init__(self, delta: float = 1.0) -> None:
        self.delta = delta

    def execute(self, task_name, dxo, fl_ctx, abort_signal):
        weights = {name: a + np.asarray(self.delta, a.dtype) for name, a in dxo.data.items()}
        meta = {MetaKey.CURRENT_ROUND: dxo.get_meta(MetaKey.CURRENT_ROUND),
                MetaKey.NUM_STEPS_CURRENT_ROUND: 1}
        return DXO(DataKind.WEIGHTS, weights, meta)
