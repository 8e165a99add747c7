"""The PyTorch model of digits-torch: an MLP 64 -> 32 -> 10 (ReLU), and how to train/score it."""

from __future__ import annotations

import numpy as np
import torch
from digits_data import N_CLASSES, N_FEATURES
from torch import nn

HIDDEN = 32


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(N_FEATURES, HIDDEN)
        self.fc2 = nn.Linear(HIDDEN, N_CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.fc1(x)))


def init_model(seed: int = 0) -> dict[str, np.ndarray]:
    """PyTorch's default initialization with ``seed`` (the server persistor's initializer)."""
    torch.manual_seed(seed)
    return {k: v.numpy() for k, v in Net().state_dict().items()}


@torch.no_grad()
def evaluate(net: nn.Module, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Accuracy and mean cross-entropy of ``net`` on ``(x, y)``."""
    net.eval()
    logits = net(torch.from_numpy(x))
    target = torch.from_numpy(y)
    return {"accuracy": float((logits.argmax(1) == target).float().mean()),
            "loss": float(nn.functional.cross_entropy(logits, target))}


def train(net: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, lr: float, batch: int,
          seed: int) -> int:
    """Mini-batch SGD (momentum 0.9) on the cross-entropy, in place; the number of steps."""
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.9)
    gen = torch.Generator().manual_seed(seed)
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    steps = 0
    for _ in range(epochs):
        order = torch.randperm(len(yt), generator=gen)
        for start in range(0, len(yt), batch):
            i = order[start:start + batch]
            opt.zero_grad()
            nn.functional.cross_entropy(net(xt[i]), yt[i]).backward()
            opt.step()
            steps += 1
    return steps
