"""Job folders: read, validate and (un)zip them, collecting every problem before refusing.

A job folder holds ``meta.json`` and one folder per app; each app has a
``config/`` folder with JSON config(s) and optionally ``custom/`` code::

    my-job/meta.json            {"name": ..., "deploy_map": {"app": ["site-1"]}, ...}
    my-job/app/config/config_fed_client.json
    my-job/app/custom/...

Validation works on in-memory entries (see :mod:`cellnet.fl._zipio`), so a
folder on disk and an archive received over the network are checked by the
same code. Every problem is collected and the submit is refused as a whole
with one :class:`JobValidationError` whose ``problems`` list says what is wrong
and where (JSON errors carry line and column).

Decisions:

* ``@ALL`` in a deploy map means the server **and** every client site, like
  the reference; it cannot be combined with other sites in another app.
* ``min_sites``/``required_sites`` may be spelled ``min_clients``/
  ``mandatory_clients`` (the reference spellings); giving both spellings with
  different values is a problem. The validated meta uses the reference keys.
* A top-level folder that ``deploy_map`` does not name is a **warning**
  (returned in ``JobSpec.warnings``), not an error: it is never deployed, so
  it cannot break a run, but it usually means a typo in ``deploy_map``.
* Symbolic links inside the folder that point at files inside the folder are
  followed (stored as plain files); links escaping the folder or pointing at
  directories are problems. Non-UTF-8 names are problems.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import stat
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cellnet.defs import JobMetaKey
from cellnet.errors import FQCNError, JobValidationError
from cellnet.fl._zipio import DEFAULT_LIMITS, Entry, Limits, build_zip, name_problem, read_entries
from cellnet.fqcn import SERVER, validate_part

ALL_SITES = "@ALL"
META_FILE = "meta.json"
SCHEDULE_TIMEOUT = "schedule_timeout"
_ALIASES = (("min_sites", JobMetaKey.MIN_CLIENTS), ("required_sites", JobMetaKey.MANDATORY_CLIENTS))


@dataclass(frozen=True)
class JobSpec:
    """A validated job: its normalized meta and the parts the runtime reads."""

    name: str
    meta: dict[str, Any]
    deploy_map: dict[str, list[str]]
    resource_spec: dict[str, dict[str, float]]
    min_sites: int
    required_sites: list[str]
    apps: tuple[str, ...]
    warnings: tuple[str, ...] = field(default=())


# --- reading a folder into entries -----------------------------------------------------


def _utf8_problem(rel: str) -> str | None:
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return f"{os.fsencode(rel)!r}: name is not valid UTF-8"
    return None


class _Oversize(Exception):
    """Internal: the folder grew past the byte limit while reading."""


def _walk(root: Path, limits: Limits) -> tuple[list[Entry], list[str]]:
    """Collect the folder's entries; problems for anything unsafe or over a limit."""
    entries: list[Entry] = []
    problems: list[str] = []
    real_root = os.path.realpath(root)
    budget = limits.max_total_bytes
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        rel_dir = os.path.relpath(dirpath, root)
        for name in sorted(dirnames) + sorted(filenames):
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            full = os.path.join(dirpath, name)
            problem = _utf8_problem(rel) or name_problem(rel, limits)
            try:
                if problem is None:
                    problem, data = _read_node(full, rel, real_root, budget)
            except _Oversize:
                problems.append(
                    f"job folder is larger than the limit of {limits.max_total_bytes} bytes"
                )
                return entries, problems
            if problem is not None:
                problems.append(problem)
                if name in dirnames:
                    dirnames.remove(name)
                continue
            entries.append((rel, data))
            budget -= len(data or b"")
            if len(entries) > limits.max_entries:
                problems.append(f"job folder has more than {limits.max_entries} entries")
                return entries, problems
    return entries, problems


def _read_node(full: str, rel: str, real_root: str, budget: int) -> tuple[str | None, bytes | None]:
    """(problem, content) for one path; content is None for a directory."""
    st = os.lstat(full)
    if stat.S_ISLNK(st.st_mode):
        target = os.path.realpath(full)
        if os.path.commonpath([real_root, target]) != real_root:
            return f"{rel}: symbolic link points outside the job folder", None
        if os.path.isdir(target):
            return f"{rel}: symbolic link to a directory is not supported", None
        if not os.path.isfile(target):
            return f"{rel}: symbolic link is dangling or not to a regular file", None
        st = os.stat(full)
    if stat.S_ISDIR(st.st_mode):
        return None, None
    if not stat.S_ISREG(st.st_mode):
        return f"{rel}: not a regular file or folder", None
    if st.st_size > budget:
        raise _Oversize
    with open(full, "rb") as f:
        data = f.read(budget + 1)
    if len(data) > budget:
        raise _Oversize
    return None, data


def read_job_folder(path: str | os.PathLike[str], limits: Limits = DEFAULT_LIMITS) -> list[Entry]:
    """The entries of a job folder on disk; raises if anything in it is unsafe."""
    root = Path(path)
    if not root.is_dir():
        raise JobValidationError(f"job folder {str(root)!r} is not a folder")
    entries, problems = _walk(root, limits)
    if problems:
        raise JobValidationError(f"job folder {root.name!r} is invalid", problems)
    return entries


def zip_job_folder(path: str | os.PathLike[str], limits: Limits = DEFAULT_LIMITS) -> bytes:
    """Deterministic zip of a job folder (entries relative to the folder)."""
    return build_zip(read_job_folder(path, limits))


def unzip_job(data: bytes, dest: str | os.PathLike[str], limits: Limits = DEFAULT_LIMITS) -> Path:
    """Extract a job archive into ``dest`` (which must not exist); all-or-nothing."""
    dest = Path(dest)
    if dest.exists():
        raise JobValidationError(f"destination {str(dest)!r} already exists")
    entries = read_entries(data, limits)
    tmp = dest.with_name(f".{dest.name}.unzip-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
        for name, content in sorted(entries, key=lambda e: e[0]):
            target = tmp / name
            if content is None:
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


# --- validation --------------------------------------------------------------------------


def _parse_json(name: str, data: bytes, problems: list[str]) -> Any:
    """Parse JSON; on failure add a problem with line and column and return None."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        problems.append(f"{name}: not UTF-8 text (byte {exc.start})")
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        problems.append(f"{name}: invalid JSON at line {exc.lineno} column {exc.colno}: {exc.msg}")
        return None


def _pick_alias(meta: dict[str, Any], ours: str, ref: str, problems: list[str]) -> Any:
    """The value under our key or the reference key; a problem if both disagree."""
    if ours in meta and ref in meta and meta[ours] != meta[ref]:
        problems.append(f"{META_FILE}: '{ours}' and '{ref}' are both given and differ")
    return meta.get(ours, meta.get(ref))


def _check_site(site: Any, where: str, sites: Collection[str] | None) -> str | None:
    if not isinstance(site, str):
        return f"{where}: site {site!r} is not a string"
    if site in (SERVER, ALL_SITES):
        return None
    try:
        validate_part(site)
    except FQCNError as exc:
        return f"{where}: site {site!r} is not a valid site name ({exc})"
    if sites is not None and site not in sites:
        return f"{where}: unknown site {site!r} (known sites: {', '.join(sorted(sites))})"
    return None


def _check_deploy_map(
    raw: Any, sites: Collection[str] | None, problems: list[str]
) -> dict[str, list[str]]:
    """Validate deploy_map: app names, site names, no site in two apps."""
    if not isinstance(raw, dict) or not raw:
        problems.append(f"{META_FILE}: 'deploy_map' must be a non-empty object of app -> sites")
        return {}
    owner: dict[str, str] = {}
    result: dict[str, list[str]] = {}
    for app, app_sites in raw.items():
        where = f"{META_FILE}: deploy_map[{app!r}]"
        if "/" in app or name_problem(app, DEFAULT_LIMITS):
            problems.append(f"{where}: app name must be a plain folder name")
            continue
        if not isinstance(app_sites, list) or not app_sites:
            problems.append(f"{where}: must be a non-empty list of sites")
            continue
        for site in app_sites:
            problem = _check_site(site, where, sites)
            if problem is None and site in owner:
                other = owner[site]
                problem = (
                    f"{where}: site {site!r} is listed twice in this app"
                    if other == app
                    else f"{where}: site {site!r} is also deployed by app {other!r}"
                )
            if problem is not None:
                problems.append(problem)
            elif isinstance(site, str):
                owner[site] = app
        result[app] = [s for s in app_sites if isinstance(s, str)]
    if ALL_SITES in owner and len(set(owner.values())) > 1:
        problems.append(
            f"{META_FILE}: deploy_map: app {owner[ALL_SITES]!r} uses '@ALL', "
            "so no other app can be deployed"
        )
    return result


def client_sites(
    deploy_map: Mapping[str, list[str]], all_sites: Collection[str] | None
) -> set[str]:
    """The client sites a deploy map names; ``@ALL`` expands to ``all_sites``."""
    named = {s for app_sites in deploy_map.values() for s in app_sites}
    if ALL_SITES in named:
        named |= set(all_sites or ())
    return named - {SERVER, ALL_SITES}


def _check_apps(entries: dict[str, bytes | None], apps: list[str], problems: list[str]) -> None:
    for app in apps:
        if entries.get(app, b"") is not None:
            problems.append(f"{app}/: app folder named in deploy_map is missing")
            continue
        configs = [
            n
            for n in entries
            if n.startswith(f"{app}/config/") and n.endswith(".json") and entries[n] is not None
        ]
        if not configs:
            problems.append(f"{app}/config/: app has no JSON config file")
        for name in sorted(configs):
            _parse_json(name, entries[name] or b"", problems)


def _check_counts(
    meta: dict[str, Any],
    deploy_map: dict[str, list[str]],
    sites: Collection[str] | None,
    problems: list[str],
) -> tuple[int, list[str]]:
    """Validate min_sites and required_sites against the sites the deploy map names."""
    named = client_sites(deploy_map, sites)
    unknowable = any(ALL_SITES in v for v in deploy_map.values()) and sites is None
    min_sites = _pick_alias(meta, "min_sites", JobMetaKey.MIN_CLIENTS, problems)
    if min_sites is None:
        min_sites = 1
    if isinstance(min_sites, bool) or not isinstance(min_sites, int) or min_sites < 1:
        problems.append(f"{META_FILE}: min_sites must be an integer >= 1, got {min_sites!r}")
        min_sites = 1
    elif deploy_map and not unknowable and min_sites > len(named):
        problems.append(
            f"{META_FILE}: min_sites is {min_sites} but deploy_map names only "
            f"{len(named)} client site(s)"
        )
    required = _pick_alias(meta, "required_sites", JobMetaKey.MANDATORY_CLIENTS, problems) or []
    if not isinstance(required, list) or not all(isinstance(s, str) for s in required):
        problems.append(f"{META_FILE}: required_sites must be a list of site names")
        return min_sites, []
    for site in required:
        if deploy_map and not unknowable and site not in named:
            problems.append(f"{META_FILE}: required site {site!r} is not deployed by deploy_map")
    return min_sites, list(required)


def _check_resources(
    raw: Any, deploy_map: dict[str, list[str]], sites: Collection[str] | None, problems: list[str]
) -> dict[str, dict[str, float]]:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        problems.append(f"{META_FILE}: resource_spec must be an object of site -> resources")
        return {}
    named = client_sites(deploy_map, sites)
    unknowable = any(ALL_SITES in v for v in deploy_map.values()) and sites is None
    for site, res in raw.items():
        where = f"{META_FILE}: resource_spec[{site!r}]"
        if deploy_map and not unknowable and site not in named:
            problems.append(f"{where}: site is not deployed by deploy_map")
        if not isinstance(res, dict):
            problems.append(f"{where}: must be an object of resource -> amount")
            continue
        for key, amount in res.items():
            ok = isinstance(amount, int | float) and not isinstance(amount, bool)
            if not ok or not math.isfinite(amount) or amount < 0:
                problems.append(f"{where}[{key!r}]: amount must be a number >= 0, got {amount!r}")
    return raw


def validate_entries(
    entries: list[Entry],
    sites: Collection[str] | None = None,
    folder_name: str = "",
) -> JobSpec:
    """Validate a job given as entries; ``sites`` is the project's client site list, if known."""
    problems: list[str] = []
    by_name = dict(entries)
    meta: Any = None
    if by_name.get(META_FILE) is None:
        problems.append(f"{META_FILE}: missing (a job folder needs one at its top level)")
    else:
        meta = _parse_json(META_FILE, by_name[META_FILE] or b"", problems)
        if meta is not None and not isinstance(meta, dict):
            problems.append(f"{META_FILE}: must be a JSON object")
            meta = None
    if meta is None:
        raise JobValidationError(f"job {folder_name!r} is invalid", problems)
    name = meta.get(JobMetaKey.JOB_NAME, folder_name or "job")
    if not isinstance(name, str) or not name.strip():
        problems.append(f"{META_FILE}: 'name' must be a non-empty string")
    deploy_map = _check_deploy_map(meta.get(JobMetaKey.DEPLOY_MAP), sites, problems)
    _check_apps(by_name, list(deploy_map), problems)
    min_sites, required = _check_counts(meta, deploy_map, sites, problems)
    resources = _check_resources(meta.get(JobMetaKey.RESOURCE_SPEC), deploy_map, sites, problems)
    timeout = meta.get(SCHEDULE_TIMEOUT)
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0
    ):
        problems.append(f"{META_FILE}: {SCHEDULE_TIMEOUT} must be a number of seconds > 0")
    if problems:
        raise JobValidationError(f"job {folder_name or name!r} is invalid", problems)
    top = sorted({n.split("/")[0] for n, d in entries if d is None and "/" not in n})
    warnings = tuple(
        f"{d}/: folder is not in deploy_map and will not be deployed"
        for d in top
        if d not in deploy_map
    )
    norm = {k: v for k, v in meta.items() if k not in dict(_ALIASES)}
    norm.update(
        {
            JobMetaKey.JOB_NAME: name,
            JobMetaKey.DEPLOY_MAP: deploy_map,
            JobMetaKey.RESOURCE_SPEC: resources,
            JobMetaKey.MIN_CLIENTS: min_sites,
            JobMetaKey.MANDATORY_CLIENTS: required,
        }
    )
    norm = {str(k): v for k, v in norm.items()}
    return JobSpec(
        name, norm, deploy_map, resources, min_sites, required, tuple(deploy_map), warnings
    )


def load_job_folder(
    path: str | os.PathLike[str],
    sites: Collection[str] | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> JobSpec:
    """Read and validate a job folder on disk."""
    root = Path(path)
    return validate_entries(read_job_folder(root, limits), sites, root.name)


def load_job_archive(
    data: bytes,
    sites: Collection[str] | None = None,
    folder_name: str = "",
    limits: Limits = DEFAULT_LIMITS,
) -> tuple[JobSpec, bytes]:
    """Validate a job archive; returns the spec and the archive in canonical form."""
    entries = read_entries(data, limits)
    return validate_entries(entries, sites, folder_name), build_zip(entries)
