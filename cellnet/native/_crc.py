"""CRC32C over any buffer, and copy-with-checksum in one pass."""

from __future__ import annotations

from cellnet.errors import BufferTooSmallError
from cellnet.native._loader import ffi, lib
from cellnet.native._status import check


def crc32c(data, crc: int = 0) -> int:
    """CRC32C of ``data`` (any contiguous buffer), continuing from ``crc``."""
    if type(data) is bytes:  # cffi passes bytes straight through: skips from_buffer
        return lib.cn_crc32c(crc, data, len(data))
    buf = ffi.from_buffer(data)
    return lib.cn_crc32c(crc, buf, len(buf))


def crc32c_impl() -> str:
    """Name of the implementation in use (``"avx512-vpclmul"``, ``"pclmul"``, ``"sse4.2"``,
    ``"armv8-crc"`` or ``"portable"``)."""
    return ffi.string(lib.cn_crc32c_impl()).decode()


def copy_crc32c(dst, src, crc: int = 0) -> int:
    """Copy ``src`` into the start of writable ``dst``; return the CRC32C of the bytes.

    One pass over ``src``; large copies use non-temporal stores, so ``dst`` is
    not left in cache.  Overlapping buffers raise InvalidArgumentError.
    """
    s = ffi.from_buffer(src)
    try:
        d = ffi.from_buffer(dst, require_writable=True)
    except BufferError as exc:
        raise TypeError(f"destination must be a writable buffer: {exc}") from exc
    if len(d) < len(s):
        raise BufferTooSmallError(
            f"destination holds {len(d)} bytes, source has {len(s)}", lib.CN_E_NOSPACE)
    out = ffi.new("uint32_t *", crc)
    check(lib.cn_copy_crc32c(d, s, len(s), out), "copy_crc32c")
    return out[0]
