"""The cffi cdef mirrors the public header, and the loader refuses bad builds."""

from __future__ import annotations

import pathlib
import re
import subprocess
import sys

import pytest

from cellnet import native
from cellnet.errors import NativeBuildError

ROOT = pathlib.Path(__file__).resolve().parents[2]
HEADER = ROOT / "native" / "include" / "cellnet_native.h"
CDEF = ROOT / "native" / "ffi" / "cdef.h"


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def _prototypes(text: str) -> dict[str, str]:
    """Function name -> normalised prototype for every cn_ function declared."""
    text = _strip_comments(text)
    out = {}
    for m in re.finditer(r"([A-Za-z_][\w \*]*?\b(cn_\w+)\s*\(([^;{]*?)\))\s*;", text):
        proto = " ".join(m.group(1).split())
        proto = re.sub(r"\s*([(),*])\s*", r"\1", proto)
        out[m.group(2)] = proto
    return out


def _structs(text: str) -> dict[str, list[str]]:
    text = _strip_comments(text)
    out = {}
    for m in re.finditer(r"typedef struct (cn_\w+)\s*\{(.*?)\}", text, flags=re.S):
        fields = [" ".join(f.split()) for f in m.group(2).split(";") if f.strip()]
        out[m.group(1)] = fields
    return out


def test_cdef_declares_every_header_function_identically():
    header = _prototypes(HEADER.read_text())
    cdef = _prototypes(CDEF.read_text())
    assert header, "no prototypes parsed from the header"
    assert header == cdef


def test_cdef_structs_match_header():
    header = _structs(HEADER.read_text())
    cdef = _structs(CDEF.read_text())
    # The header may size arrays with a macro; the cdef spells the number.
    norm = {k: [f.replace("CN_PACK_MAX_NDIM", "64") for f in v] for k, v in header.items()}
    assert norm == cdef


def test_abi_version_matches_header():
    m = re.search(r"#define CN_ABI_VERSION (\d+)", HEADER.read_text())
    assert m and int(m.group(1)) == native.EXPECTED_ABI == native.lib.cn_abi_version()


def test_every_status_has_a_message():
    codes = [getattr(native.lib, n) for n in dir(native.lib) if n.startswith("CN_E_")]
    assert len(codes) >= 10
    texts = {native.ffi.string(native.lib.cn_strerror(c)).decode() for c in codes}
    assert len(texts) == len(codes) and "unknown status" not in texts
    assert native.ffi.string(native.lib.cn_strerror(-999)) == b"unknown status"


def test_noop_roundtrips_its_argument():
    assert native.lib.cn_noop(41) == 41


def _run_isolated(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_missing_build_says_how_to_rebuild():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name == 'cellnet._cellnet_native':\n"
        "            raise ImportError('simulated missing build')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import cellnet\n"
    )
    proc = _run_isolated(code)
    assert proc.returncode != 0
    assert "NativeBuildError" in proc.stderr
    assert "pip install" in proc.stderr and "simulated missing build" in proc.stderr


def test_mismatched_build_is_refused(monkeypatch):
    from cellnet.native import _loader

    monkeypatch.setattr(_loader, "EXPECTED_ABI", native.EXPECTED_ABI + 1)
    with pytest.raises(NativeBuildError, match="stale"):
        _loader.load()


def test_forced_portable_restores_dispatch():
    before = native.crc32c_impl()
    with native.forced_portable():
        assert native.crc32c_impl() == "portable"
    assert native.crc32c_impl() == before
