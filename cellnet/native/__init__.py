"""Pythonic layer over cellnet's C core (loaded through cffi, API mode)."""

from __future__ import annotations

from cellnet.native._cpu import cpu_features, forced_portable
from cellnet.native._crc import copy_crc32c, crc32c, crc32c_impl
from cellnet.native._loader import EXPECTED_ABI, ffi, lib

__all__ = [
    "EXPECTED_ABI",
    "copy_crc32c",
    "cpu_features",
    "crc32c",
    "crc32c_impl",
    "ffi",
    "forced_portable",
    "lib",
]
