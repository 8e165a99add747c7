"""Load the compiled core and check it matches this Python package.

A missing or stale build fails at import time with a message that says how
to rebuild, instead of a bare ImportError or a crash later on.
"""

from __future__ import annotations

from cellnet.errors import NativeBuildError

#: Must equal CN_ABI_VERSION in native/include/cellnet_native.h.
EXPECTED_ABI = 1

_REBUILD = (
    "Rebuild it from the source checkout with:  pip install -e '.[test]'  "
    "(or reinstall the package:  pip install --force-reinstall --no-deps cellnet)"
)


def load():
    """Return ``(ffi, lib)`` of the native extension or raise NativeBuildError."""
    try:
        from cellnet import _cellnet_native as mod
    except ImportError as exc:
        raise NativeBuildError(
            f"cellnet's native core (cellnet._cellnet_native) is not built or cannot be "
            f"loaded: {exc}. {_REBUILD}"
        ) from exc
    abi = mod.lib.cn_abi_version()
    if abi != EXPECTED_ABI or mod.lib.CN_ABI_VERSION != EXPECTED_ABI:
        raise NativeBuildError(
            f"cellnet's native core has ABI version {abi} but this Python package expects "
            f"{EXPECTED_ABI}: the build is stale. {_REBUILD}"
        )
    return mod.ffi, mod.lib


ffi, lib = load()
