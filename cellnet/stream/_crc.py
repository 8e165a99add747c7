"""CRC32C combine: the CRC of ``A + B`` from ``crc(A)``, ``crc(B)`` and ``len(B)``, no data pass.

Why: every chunk of a stream is checksummed once as it is copied; the
whole-payload CRC is then folded from the chunk CRCs instead of a second pass
over gigabytes.  Appending ``n`` zero bytes to a CRC register is a linear map
over GF(2); its 32 columns are built once per length (zlib's matrix-squaring
method) and cached, so a combine costs 32 shifts and xors in Python.
"""

from __future__ import annotations

import functools

_POLY = 0x82F63B78  # CRC32C (Castagnoli), reflected


def _apply(mat: tuple[int, ...], vec: int) -> int:
    out = 0
    i = 0
    while vec:
        if vec & 1:
            out ^= mat[i]
        vec >>= 1
        i += 1
    return out


def _square(mat: tuple[int, ...]) -> tuple[int, ...]:
    return tuple(_apply(mat, mat[i]) for i in range(32))


@functools.lru_cache(maxsize=64)
def _zeros_operator(nbytes: int) -> tuple[int, ...]:
    """The map that appends ``nbytes`` zero bytes to a (pre-conditioned) CRC register."""
    one_bit = (_POLY, *(1 << i for i in range(31)))
    op = _square(_square(_square(one_bit)))  # one zero byte
    result: tuple[int, ...] | None = None
    n = nbytes
    while n:
        if n & 1:
            result = op if result is None else tuple(_apply(op, c) for c in result)
        n >>= 1
        if n:
            op = _square(op)
    return result if result is not None else tuple(1 << i for i in range(32))


def crc32c_combine(crc_a: int, crc_b: int, len_b: int) -> int:
    """CRC32C of ``A + B`` given ``crc32c(A)``, ``crc32c(B)`` and ``len(B)``."""
    if len_b <= 0:
        return crc_a
    return _apply(_zeros_operator(len_b), crc_a) ^ crc_b
