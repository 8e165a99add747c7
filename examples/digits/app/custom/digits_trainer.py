"""digits executor: train (local SGD epochs), validate, submit_model, on this site's data share."""

from __future__ import annotations

import zlib

import digits_model as M
from digits_data import site_data

from cellnet.defs import FLContextKey, MetaKey
from cellnet.fl import DXO, DataKind
from cellnet.fl.runtime import Executor


class DigitsTrainer(Executor):
    def __init__(self, num_sites: int = 2, epochs: int = 5, lr: float = 0.5, batch: int = 32,
                 l2: float = 1e-4, alpha: float = 0.5) -> None:
        self.num_sites, self.epochs, self.lr = num_sites, epochs, lr
        self.batch, self.l2, self.alpha = batch, l2, alpha
        self.data = None
        self.local_model = None

    def _data(self, site):
        if self.data is None:
            self.data = site_data(site, self.num_sites, self.alpha)
        return self.data

    def execute(self, task_name, dxo, fl_ctx, abort_signal):
        site = fl_ctx.get_prop(FLContextKey.CLIENT_NAME)
        x, y, xv, yv = self._data(site)
        if task_name == "validate":
            model = {k: dxo.data[k] for k in ("W", "b")}
            return DXO.metrics({"accuracy": M.accuracy(model, xv, yv),
                                "loss": M.loss(model, xv, yv)})
        if task_name == "submit_model":
            if self.local_model is None:
                raise RuntimeError(f"{site} has not trained a model yet")
            return DXO(DataKind.WEIGHTS, self.local_model)
        rnd = dxo.get_meta(MetaKey.CURRENT_ROUND)
        received = {k: dxo.data[k] for k in ("W", "b")}
        seen = {"accuracy": M.accuracy(received, xv, yv), "loss": M.loss(received, xv, yv)}
        seed = zlib.crc32(f"{site}/{rnd}".encode())
        model, steps = M.train(received, x, y, self.epochs, self.lr, self.batch, self.l2, seed)
        self.local_model = model
        meta = {MetaKey.CURRENT_ROUND: rnd, MetaKey.NUM_STEPS_CURRENT_ROUND: steps,
                MetaKey.INITIAL_METRICS: seen}
        return DXO(DataKind.WEIGHTS, model, meta)
