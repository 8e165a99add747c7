"""Find files of the cellnet source checkout (bench/, examples/) from an installed package."""

from __future__ import annotations

import pathlib


def find_in_checkout(relative: str, marker: str = "") -> pathlib.Path | None:
    """``<root>/<relative>`` for the first root (the current directory, then the package's
    parent in an editable install) where ``<relative>/<marker>`` exists; else None."""
    import cellnet

    for root in (pathlib.Path.cwd(), pathlib.Path(cellnet.__file__).resolve().parent.parent):
        candidate = root / relative
        if (candidate / marker if marker else candidate).is_file():
            return candidate
    return None
