"""Map native status codes to typed exceptions (checked on the line after each call)."""

from __future__ import annotations

from cellnet import errors
from cellnet.native._loader import ffi, lib

_BY_STATUS: dict[int, type[errors.NativeError]] = {
    lib.CN_E_INVAL: errors.InvalidArgumentError,
    lib.CN_E_NOSPACE: errors.BufferTooSmallError,
    lib.CN_E_TRUNCATED: errors.TruncatedError,
    lib.CN_E_FORMAT: errors.CorruptDataError,
    lib.CN_E_CHECKSUM: errors.ChecksumError,
    lib.CN_E_RANGE: errors.CorruptDataError,
    lib.CN_E_VERSION: errors.UnsupportedVersionError,
    lib.CN_E_DTYPE: errors.DTypeError,
    lib.CN_E_SHAPE: errors.ShapeError,
}


def error_for(status: int, what: str) -> errors.CellnetError:
    """Build the exception for a failed native call described by ``what``."""
    text = ffi.string(lib.cn_strerror(status)).decode()
    if status == lib.CN_E_LIMIT:
        return errors.LimitExceededError(f"{what}: {text}")
    cls = _BY_STATUS.get(status, errors.NativeError)
    return cls(f"{what}: {text}", status)


def check(status: int, what: str) -> None:
    """Raise the typed exception for a negative status."""
    if status < 0:
        raise error_for(status, what)
