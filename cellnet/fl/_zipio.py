"""Deterministic zip archives of job folders and a safe reader for untrusted ones.

Writing: entries sorted by name, fixed timestamp (1980-01-01), fixed modes and
creator system, one compression level, UTF-8 names - so the same folder always
gives the same bytes and its hash can identify a submit.

Reading (:func:`read_entries`) treats the archive as hostile: every name is
checked (absolute paths, ``..``, backslashes, drive letters, non-UTF-8, duplicates),
symlink entries are refused, and the entry count and the total size are bounded
*before* anything is inflated; the size bound is enforced again on the bytes
actually inflated, because a header's sizes can lie. All name problems are
collected and reported together in one :class:`JobValidationError`.
"""

from __future__ import annotations

import io
import stat
import zipfile
from collections.abc import Iterable
from dataclasses import dataclass

from cellnet.errors import JobValidationError

FIXED_DATE = (1980, 1, 1, 0, 0, 0)
_UTF8_FLAG = 0x800
_CHUNK = 1 << 16


@dataclass(frozen=True)
class Limits:
    """Bounds on a job folder or archive (defaults suit model code plus small configs)."""

    max_total_bytes: int = 64 * 1024 * 1024
    max_entries: int = 10_000
    max_name_len: int = 1024


DEFAULT_LIMITS = Limits()

# An entry: archive name (POSIX, no trailing slash) and its bytes, or None for a directory.
Entry = tuple[str, bytes | None]


def build_zip(entries: Iterable[Entry]) -> bytes:
    """Deterministic zip of ``entries`` (sorted by name; directories get entries too)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for name, data in sorted(entries, key=lambda e: e[0]):
            is_dir = data is None
            info = zipfile.ZipInfo(name + "/" if is_dir else name, date_time=FIXED_DATE)
            info.create_system = 3
            mode = (stat.S_IFDIR | 0o755) if is_dir else (stat.S_IFREG | 0o644)
            info.external_attr = (mode << 16) | (0x10 if is_dir else 0)
            info.compress_type = zipfile.ZIP_STORED if is_dir else zipfile.ZIP_DEFLATED
            zf.writestr(info, b"" if is_dir else data, compresslevel=6)
    return buf.getvalue()


def name_problem(name: str, limits: Limits) -> str | None:
    """Why ``name`` (an archive or relative path, '/'-separated) is unsafe, or None."""
    if not name:
        return "empty entry name"
    if len(name) > limits.max_name_len:
        return f"entry name longer than {limits.max_name_len} characters"
    if "\\" in name:
        return f"entry {name!r} contains a backslash"
    if "\x00" in name:
        return f"entry {name!r} contains a NUL character"
    if name.startswith("/") or (len(name) > 1 and name[1] == ":"):
        return f"entry {name!r} is an absolute path"
    parts = name.split("/")
    if any(p == ".." for p in parts):
        return f"entry {name!r} escapes the job folder ('..')"
    if any(p in ("", ".") for p in parts):
        return f"entry {name!r} has an empty or '.' path component"
    return None


def _entry_name(info: zipfile.ZipInfo) -> tuple[str, str | None]:
    """(name without trailing slash, problem or None) for one archive member."""
    name = info.filename
    if not info.flag_bits & _UTF8_FLAG and not name.isascii():
        return name, f"entry {name!r} has a name that is not UTF-8"
    if name.endswith("/"):
        name = name[:-1]
    return name, None


def _is_symlink(info: zipfile.ZipInfo) -> bool:
    return stat.S_ISLNK(info.external_attr >> 16)


def _check_members(infos: list[zipfile.ZipInfo], limits: Limits) -> list[str]:
    problems: list[str] = []
    if len(infos) > limits.max_entries:
        return [f"archive has {len(infos)} entries; the limit is {limits.max_entries}"]
    declared = sum(i.file_size for i in infos)
    if declared > limits.max_total_bytes:
        problems.append(
            f"archive would inflate to {declared} bytes; the limit is {limits.max_total_bytes}"
        )
    seen: set[str] = set()
    for info in infos:
        name, problem = _entry_name(info)
        problem = problem or name_problem(name, limits)
        if problem is None and _is_symlink(info):
            problem = f"entry {name!r} is a symbolic link"
        if problem is None and name in seen:
            problem = f"entry {name!r} appears more than once"
        if problem is not None:
            problems.append(problem)
        seen.add(name)
    return problems


def read_entries(data: bytes, limits: Limits = DEFAULT_LIMITS) -> list[Entry]:
    """Parse an untrusted zip into entries, enforcing every safety check and limit."""
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, ValueError, OSError) as exc:
        raise JobValidationError("job archive is not a valid zip", [f"bad zip: {exc}"]) from exc
    with zf:
        infos = zf.infolist()
        problems = _check_members(infos, limits)
        if problems:
            raise JobValidationError("job archive is unsafe", problems)
        entries: list[Entry] = []
        budget = limits.max_total_bytes
        for info in infos:
            name, _ = _entry_name(info)
            if info.is_dir():
                entries.append((name, None))
                continue
            content, budget = _inflate(zf, info, name, budget, limits)
            entries.append((name, content))
    return entries


def _inflate(
    zf: zipfile.ZipFile, info: zipfile.ZipInfo, name: str, budget: int, limits: Limits
) -> tuple[bytes, int]:
    """Inflate one member without ever exceeding the remaining byte budget."""
    out = bytearray()
    try:
        with zf.open(info) as src:
            while chunk := src.read(min(_CHUNK, budget + 1)):
                out += chunk
                if len(out) > budget:
                    raise JobValidationError(
                        "job archive is unsafe",
                        [f"archive inflates past the limit of {limits.max_total_bytes} bytes"],
                    )
    except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as exc:
        raise JobValidationError(
            "job archive is corrupt", [f"entry {name!r} cannot be read: {exc}"]
        ) from exc
    return bytes(out), budget - len(out)


def subtree(entries: Iterable[Entry], prefix: str) -> list[Entry]:
    """The entries under folder ``prefix``, renamed relative to it."""
    head = prefix.rstrip("/") + "/"
    return [(n[len(head) :], d) for n, d in entries if n.startswith(head)]
