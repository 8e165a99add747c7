"""examples/digits-torch reaches its stated accuracy through `cellnet simulate` (real processes).

The PyTorch MLP is trained in a separate training process per site through
cellnet.client; skipped without torch (extra ``torch``) or scikit-learn.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn")
torch = pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "examples" / "digits-torch"
CUSTOM = EXAMPLE / "app" / "custom"
MODULES = ("digits_data", "digits_net")


@pytest.fixture
def torch_modules(monkeypatch):
    monkeypatch.syspath_prepend(str(CUSTOM))
    for name in MODULES:  # examples/digits has a digits_data too
        monkeypatch.delitem(sys.modules, name, raising=False)
    import digits_data
    import digits_net

    yield digits_data, digits_net
    for name in MODULES:
        sys.modules.pop(name, None)


def processes_under(root: Path) -> list[int]:
    """Pids of this user's processes whose working directory is inside ``root``."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if Path(os.readlink(entry / "cwd")).is_relative_to(root):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def test_data_split_is_the_numpy_examples_one():
    numpy_copy = REPO / "examples" / "digits" / "app" / "custom" / "digits_data.py"
    assert (CUSTOM / "digits_data.py").read_text() == numpy_copy.read_text()


def test_initial_model_is_the_torch_default_init(torch_modules):
    _, net_mod = torch_modules
    model = net_mod.init_model(seed=0)
    assert {k: v.shape for k, v in model.items()} == {
        "fc1.weight": (32, 64), "fc1.bias": (32,), "fc2.weight": (10, 32), "fc2.bias": (10,)}
    assert all(v.dtype == np.float32 for v in model.values())
    np.testing.assert_array_equal(model["fc1.weight"], net_mod.init_model(seed=0)["fc1.weight"])
    assert not np.array_equal(model["fc1.weight"], net_mod.init_model(seed=1)["fc1.weight"])


def test_digits_torch_example_reaches_its_stated_accuracy(tmp_path, torch_modules):
    data, net_mod = torch_modules
    ws = tmp_path / "w"
    try:
        proc = subprocess.run([sys.executable, "-m", "cellnet.cli", "simulate", "--example",
                               "digits-torch", "--workspace", str(ws), "--timeout", "90"],
                              capture_output=True, text=True, timeout=120, cwd=REPO)
        deadline = time.monotonic() + 5
        while processes_under(ws) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert processes_under(ws) == []  # no training process outlives the job
    finally:
        for pid in processes_under(ws):
            os.kill(pid, signal.SIGKILL)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    assert "  round 9: 2 result(s)" in out and "accuracy=" in out
    table = out.split("cross-site evaluation (rows: models, columns: sites that evaluated "
                      "them):\n", 1)[1].splitlines()
    assert [row.split()[0] for row in table[1:5]] == ["site-1", "site-2", "server:final",
                                                      "server:best"]
    assert min(float(v) for v in table[3].split()[1:]) > 0.85  # final model good on both sites

    # each site trained in its own process through cellnet.client, all 10 rounds
    for site in ("site-1", "site-2"):
        [log] = ws.glob(f"{site}/*/trainer.stderr.log")
        assert f"{site}: round 10/10: received model accuracy" in log.read_text()

    models = next(ws.glob("server/run/*/models"))
    x, y = data.test_set()
    for name in ("final", "best"):
        with np.load(models / f"{name}.npz") as z:
            net = net_mod.Net()
            net.load_state_dict({k: torch.from_numpy(z[k]) for k in z.files})
        acc = net_mod.evaluate(net, x, y)["accuracy"]
        assert acc >= 0.93, (name, acc)  # README: about 96 %, at least 93 %
