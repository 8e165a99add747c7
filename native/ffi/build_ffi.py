"""Emit the C source of cellnet's cffi API-mode binding (run by CMake).

API mode compiles the wrapper against the real header, so the per-call cost
is a direct C call and struct layouts are checked by the compiler.
"""

import pathlib
import sys

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent


def make_ffi() -> FFI:
    ffi = FFI()
    ffi.cdef((HERE / "cdef.h").read_text())
    ffi.set_source("cellnet._cellnet_native", '#include "cellnet_native.h"\n')
    return ffi


if __name__ == "__main__":
    out = pathlib.Path(sys.argv[1])
    make_ffi().emit_c_code(str(out))
