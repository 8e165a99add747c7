"""CRC32C over any buffer, and copy-with-checksum in one pass."""

from __future__ import annotations

from cellnet.native._loader import ffi, lib
from cellnet.native._status import check


def crc32c(data, crc: int = 0) -> int:
    """CRC32C of ``data`` (any contiguous buffer), continuing from ``crc``."""
    buf = ffi.from_buffer(data)
    return lib.cn_crc32c(crc, buf, len(buf))


def crc32c_impl() -> str:
    """Name of the implementation in use (e.g. ``"sse4.2"``, ``"portable"``)."""
    return ffi.string(lib.cn_crc32c_impl()).decode()


def copy_crc32c(dst, src, crc: int = 0) -> int:
    """Copy ``src`` into the start of writable ``dst``; return the CRC32C of the bytes."""
    s = ffi.from_buffer(src)
    d = ffi.from_buffer(dst, require_writable=True)
    if len(d) < len(s):
        raise ValueError(f"destination holds {len(d)} bytes, source has {len(s)}")
    out = ffi.new("uint32_t *", crc)
    check(lib.cn_copy_crc32c(d, s, len(s), out), "copy_crc32c")
    return out[0]
