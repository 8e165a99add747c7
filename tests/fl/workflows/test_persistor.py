"""NPModelPersistor: initial model sources, atomic saves, kept rounds, bad input."""

from __future__ import annotations

import numpy as np
import pytest

from cellnet.errors import JobError
from cellnet.fl.persistor import NPModelPersistor, load_npz

INIT_MODULE = '''
import numpy as np

def make(n=3, value=0.5):
    return {"w": np.full(n, value), "b": np.zeros(1)}
'''


def test_initial_model_from_arrays_file_or_initializer(tmp_path):
    p = NPModelPersistor(arrays={"w": [1, 2]}, dtype="float64")
    m = p.load_initial(tmp_path)
    assert m["w"].dtype == np.float64 and m["w"].tolist() == [1.0, 2.0]
    np.savez(tmp_path / "init.npz", w=np.arange(3, dtype=np.float32))
    m = NPModelPersistor(model_file="init.npz").load_initial(tmp_path)
    assert m["w"].tolist() == [0.0, 1.0, 2.0] and m["w"].dtype == np.float32
    (tmp_path / "custom").mkdir()
    (tmp_path / "custom" / "my_init_mod.py").write_text(INIT_MODULE)
    p = NPModelPersistor(initializer="my_init_mod.make", initializer_args={"n": 2})
    m = p.load_initial(tmp_path)
    assert m["w"].tolist() == [0.5, 0.5] and m["w"].dtype == np.float32


@pytest.mark.parametrize("args, match", [
    ({}, "exactly one of"),
    ({"arrays": {"w": [1]}, "model_file": "x.npz"}, "exactly one of"),
    ({"initializer": "nodot"}, "module.function"),
    ({"arrays": {"w": [1]}, "dtype": "int32"}, "float dtype"),
    ({"arrays": {"w": [1]}, "dtype": "nope"}, "unknown dtype"),
    ({"arrays": {"w": [1]}, "save_dir": "../up"}, "relative folder"),
    ({"arrays": {"w": [1]}, "keep_rounds": 0}, "keep_rounds"),
])
def test_bad_arguments_raise_job_error(args, match):
    with pytest.raises(JobError, match=match):
        NPModelPersistor(**args)


def test_bad_initial_models_raise_job_error(tmp_path):
    with pytest.raises(JobError, match="cannot read the model file"):
        NPModelPersistor(model_file="missing.npz").load_initial(tmp_path)
    with pytest.raises(JobError, match="not numeric"):
        NPModelPersistor(arrays={"w": ["a"]}).load_initial(tmp_path)
    with pytest.raises(JobError, match="cannot be loaded"):
        NPModelPersistor(initializer="no_such_mod.f").load_initial(tmp_path)
    with pytest.raises(JobError, match="non-empty mapping"):
        NPModelPersistor(arrays={}).load_initial(tmp_path)


def test_saves_are_complete_files_and_old_rounds_are_dropped(tmp_path):
    p = NPModelPersistor(arrays={"w": [0.0]}, keep_rounds=2)
    for r in range(4):
        p.save_round({"w": np.full(2, float(r), np.float32)}, r, tmp_path)
    names = sorted(f.name for f in (tmp_path / "models").iterdir())
    assert names == ["round-2.npz", "round-3.npz"]  # no temp files left either
    assert load_npz(tmp_path / "models" / "round-3.npz")["w"].tolist() == [3.0, 3.0]
    assert NPModelPersistor(arrays={"w": [0.0]}, save_rounds=False).save_round(
        {"w": np.zeros(1)}, 0, tmp_path / "x") is None
    with pytest.raises(JobError, match="float arrays"):
        p.save({"w": np.arange(3)}, "final", tmp_path)
    with pytest.raises(JobError, match="bad model name"):
        p.save({"w": np.zeros(1)}, "../x", tmp_path)
    assert sorted(p.saved) == ["round-2", "round-3"]
