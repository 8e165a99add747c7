"""examples/digits reaches its stated accuracy through `cellnet simulate` (real processes)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")

REPO = Path(__file__).resolve().parents[2]
CUSTOM = REPO / "examples" / "digits" / "app" / "custom"


@pytest.fixture
def digits_modules(monkeypatch):
    monkeypatch.syspath_prepend(str(CUSTOM))
    import digits_data
    import digits_model

    return digits_data, digits_model


def test_split_is_non_iid_disjoint_and_deterministic(digits_modules):
    data, _ = digits_modules
    a = data.site_data("site-1", 2)
    b = data.site_data("site-2", 2)
    assert np.array_equal(a[1], data.site_data("site-1", 2)[1])
    counts = [np.bincount(np.concatenate([s[1], s[3]]), minlength=10) for s in (a, b)]
    total = sum(len(s[1]) + len(s[3]) for s in (a, b))
    assert total == 1797 - len(data.test_set()[1])  # every training image used once
    share = counts[0] / (counts[0] + counts[1])
    assert share.min() < 0.1 and share.max() > 0.9  # some digits almost only on one site
    with pytest.raises(ValueError, match="beyond num_sites"):
        data.site_data("site-3", 2)


def test_digits_example_reaches_its_stated_accuracy(tmp_path, digits_modules):
    data, model_fns = digits_modules
    proc = subprocess.run([sys.executable, "-m", "cellnet.cli", "simulate", "--example",
                           "digits", "--workspace", str(tmp_path / "w")],
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "  round 9: 2 result(s)" in out and "accuracy=" in out
    table = out.split("cross-site evaluation (rows: models, columns: sites that evaluated "
                      "them):\n", 1)[1].splitlines()
    assert table[0].split() == ["model", "\\", "site", "site-1", "site-2"]
    assert [row.split()[0] for row in table[1:5]] == ["site-1", "site-2", "server:final",
                                                      "server:best"]
    final_row = [float(v) for v in table[3].split()[1:]]
    assert min(final_row) > 0.85  # the global model does well on both sites' data
    final = next(tmp_path.glob("w/server/run/*/models/final.npz"))
    with np.load(final) as z:
        model = {k: z[k] for k in z.files}
    x, y = data.test_set()
    acc = model_fns.accuracy(model, x, y)
    assert acc >= 0.93, acc  # README: about 96 %, at least 93 %
    assert (final.parent / "best.npz").is_file()
