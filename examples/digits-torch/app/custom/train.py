"""digits-torch training script: a separate process that trains a PyTorch MLP on its site's share.

The short cellnet.client loop: ``init()``, then ``while is_running():
receive(), load the weights, score them, train, send(state_dict, metrics,
num_steps)``.  The same process answers the cross-site evaluation tasks
(``submit_model``: its last local model; ``validate``: the metrics of a
model on its validation data).
"""

from __future__ import annotations

import argparse
import sys
import zlib

import torch
from digits_data import site_data
from digits_net import Net, evaluate, train

import cellnet.client as flare


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--num_sites", type=int, default=2, help="sites the data is split across")
    p.add_argument("--epochs", type=int, default=5, help="local epochs per round")
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--batch", type=int, default=32)
    return p.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(1)  # the sites share the machine's cores
    flare.init()
    site = flare.get_site_name()
    x, y, x_val, y_val = site_data(site, args.num_sites)
    net = Net()
    local = None  # this site's last trained weights (for cross-site evaluation)
    while flare.is_running():
        model = flare.receive()
        if model is None:
            break
        if model.task_name == "submit_model":
            if local is None:
                raise RuntimeError(f"{site} has not trained a model yet")
            flare.send(local)
            continue
        net.load_state_dict(flare.to_torch(model.params))  # no copy until load_state_dict
        seen = evaluate(net, x_val, y_val)  # the received (global) model on local data
        if model.task_name == "validate":
            flare.send(None, seen)
            continue
        seed = zlib.crc32(f"{site}/{model.current_round}".encode())
        steps = train(net, x, y, args.epochs, args.lr, args.batch, seed)
        local = {k: v.clone() for k, v in net.state_dict().items()}
        # standard error is kept in <site workspace>/<job id>/trainer.stderr.log
        print(f"{site}: round {model.current_round + 1}/{model.total_rounds}: received model "
              f"accuracy {seen['accuracy']:.4f}, {steps} steps", file=sys.stderr, flush=True)
        flare.send(net.state_dict(), seen, steps)


if __name__ == "__main__":
    main()
