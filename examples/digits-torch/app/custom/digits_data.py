"""scikit-learn's bundled digits (8x8 images, 10 classes; no download), split non-IID by site.

A fixed shuffle (seed 0) holds out 20 % of the 1,797 images as the global test
set.  The rest is dealt to ``num_sites`` sites with class proportions drawn
from a Dirichlet(``alpha``) per class (seed 1), so each site sees a skewed mix
of digits; site ``k`` (``site-k``, 1-based) keeps 20 % of its share for local
validation.  The split depends only on (``num_sites``, ``alpha``), so every
process computes the same one.
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

N_FEATURES, N_CLASSES = 64, 10


def _all():
    x, y = load_digits(return_X_y=True)
    order = np.random.default_rng(0).permutation(len(y))
    return (x[order] / 16.0).astype(np.float32), y[order].astype(np.int64)


def test_set():
    """The global held-out images and labels (the same for every site count)."""
    x, y = _all()
    n_test = len(y) // 5
    return x[:n_test], y[:n_test]


def site_index(site_name: str) -> int:
    """``site-3`` -> 2 (0-based)."""
    prefix, _, num = site_name.rpartition("-")
    if prefix != "site" or not num.isdigit() or int(num) < 1:
        raise ValueError(f"digits: site names must be site-1, site-2, ...; got {site_name!r}")
    return int(num) - 1


def site_data(site_name: str, num_sites: int, alpha: float = 0.5):
    """``(x_train, y_train, x_val, y_val)`` of one site."""
    k = site_index(site_name)
    if k >= num_sites:
        raise ValueError(f"digits: {site_name} is beyond num_sites={num_sites}; set num_sites "
                         "in config_fed_client.json to the number of sites")
    x, y = _all()
    n_test = len(y) // 5
    x, y = x[n_test:], y[n_test:]
    rng = np.random.default_rng(1)
    mine = []
    for c in range(N_CLASSES):
        idx = np.flatnonzero(y == c)
        share = rng.dirichlet(np.full(num_sites, alpha))
        cuts = (np.cumsum(share)[:-1] * len(idx)).astype(int)
        mine.append(np.split(idx, cuts)[k])
    idx = np.sort(np.concatenate(mine))
    n_val = max(1, len(idx) // 5)
    val, train = idx[:n_val], idx[n_val:]
    return x[train], y[train], x[val], y[val]
