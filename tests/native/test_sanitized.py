"""Build the C core and its C test programs with ASan + UBSan and run them.

The C tests feed truncated, corrupted and random input to the decoders; under
the sanitizers any out-of-bounds read or undefined behaviour fails the run.
"""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _cmake() -> str:
    found = shutil.which("cmake", path=str(pathlib.Path(sys.executable).parent)) or shutil.which(
        "cmake"
    )
    if found is None:
        pytest.fail("cmake is needed for the sanitizer build (pip install cmake)")
    return found


@pytest.mark.slow
def test_c_tests_pass_under_asan_and_ubsan():
    cmake = _cmake()
    build = ROOT / "build" / "asan"
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0",
               UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1")
    steps = [
        [cmake, "-S", str(ROOT), "-B", str(build), "-DCMAKE_BUILD_TYPE=Debug",
         "-DCN_SANITIZE=ON", "-DCN_BUILD_TESTS=ON", "-DCN_PYTHON_MODULE=OFF"],
        [cmake, "--build", str(build), "--parallel", "2"],
    ]
    for cmd in steps:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    sources = sorted((ROOT / "native" / "tests").glob("test_*.c"))
    assert sources, "no C test programs in native/tests"
    for exe in (build / src.stem for src in sources):
        proc = subprocess.run([str(exe)], capture_output=True, text=True, timeout=300, env=env)
        output = proc.stdout[-3000:] + proc.stderr[-3000:]
        assert proc.returncode == 0, f"{exe.name} failed:\n{output}"
