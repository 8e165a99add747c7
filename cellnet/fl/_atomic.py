"""Crash-safe file writes: temp file + fsync + os.replace + directory fsync.

A reader of a path written here sees either the old complete file or the new
complete file, never a torn one, even if the process dies at any step. A crash
between writing the temp file and the rename leaves a hidden temp file behind;
its name matches :func:`is_temp_name`, readers never open such names, and
:func:`clean_temp_files` removes them when the store is next opened.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any

TEMP_MARK = ".tmp-"


def is_temp_name(name: str) -> bool:
    """True for names produced by :func:`_temp_path` (hidden, with the temp mark)."""
    return name.startswith(".") and TEMP_MARK in name


def _temp_path(path: Path) -> Path:
    return path.with_name(f".{path.name}{TEMP_MARK}{secrets.token_hex(6)}")


def fsync_dir(directory: Path) -> None:
    """Flush a directory entry change (create/rename/unlink) to disk."""
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_bytes(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data`` (durable once this returns)."""
    path = Path(path)
    tmp = _temp_path(path)
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def write_json(path: Path, obj: Any) -> None:
    """Atomically replace ``path`` with ``obj`` as sorted, indented UTF-8 JSON."""
    text = json.dumps(obj, sort_keys=True, indent=1, ensure_ascii=False)
    write_bytes(path, text.encode("utf-8"))


def clean_temp_files(root: Path) -> list[Path]:
    """Remove every leftover temp file under ``root``; return what was removed."""
    removed: list[Path] = []
    if not root.exists():
        return removed
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            if is_temp_name(name):
                p = Path(dirpath) / name
                p.unlink(missing_ok=True)
                removed.append(p)
    return removed
