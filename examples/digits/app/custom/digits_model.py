"""Multinomial logistic regression in numpy: the model is ``W`` (64x10) and ``b`` (10)."""

from __future__ import annotations

import numpy as np
from digits_data import N_CLASSES, N_FEATURES


def init_model(seed: int = 0, scale: float = 0.01) -> dict[str, np.ndarray]:
    """Small random weights (the persistor's initializer)."""
    rng = np.random.default_rng(seed)
    return {"W": (rng.standard_normal((N_FEATURES, N_CLASSES)) * scale).astype(np.float32),
            "b": np.zeros(N_CLASSES, np.float32)}


def _probs(model, x):
    z = x @ model["W"] + model["b"]
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def accuracy(model, x, y) -> float:
    return float(np.mean(np.argmax(x @ model["W"] + model["b"], axis=1) == y))


def loss(model, x, y) -> float:
    p = _probs(model, x)
    return float(-np.mean(np.log(p[np.arange(len(y)), y] + 1e-12)))


def train(model, x, y, epochs: int, lr: float, batch: int, l2: float, seed: int):
    """Mini-batch SGD on the cross-entropy; returns (new model, number of steps)."""
    w, b = model["W"].astype(np.float64), model["b"].astype(np.float64)
    rng = np.random.default_rng(seed)
    steps = 0
    for _ in range(epochs):
        order = rng.permutation(len(y))
        for start in range(0, len(y), batch):
            i = order[start:start + batch]
            p = _probs({"W": w, "b": b}, x[i])
            p[np.arange(len(i)), y[i]] -= 1.0
            w -= lr * (x[i].T @ p / len(i) + l2 * w)
            b -= lr * p.mean(axis=0)
            steps += 1
    return {"W": w.astype(np.float32), "b": b.astype(np.float32)}, steps
