"""The project file (TOML) parsed into frozen, validated dataclasses.

Example::

    name = "demo"

    [server]
    name = "server"          # optional, default "server"
    host = "localhost"
    fl_port = 8002
    admin_port = 8003
    org = "nvidia"           # optional, default: the project name

    [[sites]]
    name = "site-1"
    org = "org-a"

    [[admins]]
    name = "admin@org-a.com"
    org = "org-a"
    role = "project_admin"   # project_admin | org_admin | lead | member

Every problem raises :class:`~cellnet.errors.ProvisionError` naming the file and
the key path (``sites[1].name``). Unknown keys are errors, so typos do not pass
silently.
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cellnet.errors import ProvisionError
from cellnet.security.names import (
    RESERVED_SITE_NAMES,
    Identity,
    Kind,
    Role,
    admin_name_problem,
    cell_name_problem,
    host_problem,
    org_problem,
)

_TOP_KEYS = {"name": True, "description": False, "server": True, "sites": False, "admins": False}
_SERVER_KEYS = {"name": False, "host": True, "fl_port": True, "admin_port": True, "org": False}
_SITE_KEYS = {"name": True, "org": True}
_ADMIN_KEYS = {"name": True, "org": True, "role": True}


@dataclass(frozen=True)
class ServerSpec:
    """Where the server listens; clients connect to ``host`` and check it against the cert."""

    name: str
    host: str
    fl_port: int
    admin_port: int
    org: str


@dataclass(frozen=True)
class Project:
    """A whole federation: the server, the sites and the admins, with unique names."""

    name: str
    server: ServerSpec
    sites: tuple[Identity, ...] = ()
    admins: tuple[Identity, ...] = ()
    description: str = ""

    @property
    def participants(self) -> tuple[Identity, ...]:
        """Server first, then sites, then admins, in file order."""
        server = Identity(self.server.name, self.server.org, None, Kind.SERVER)
        return (server, *self.sites, *self.admins)


class _Checker:
    """Collects the file name so every message says where the problem is."""

    def __init__(self, source: str):
        self.source = source

    def fail(self, where: str, problem: str) -> ProvisionError:
        return ProvisionError(f"{self.source}: {where}: {problem}")

    def table(self, value: object, where: str, keys: Mapping[str, bool]) -> Mapping[str, Any]:
        if not isinstance(value, Mapping):
            raise self.fail(where, f"must be a table, not {type(value).__name__}")
        unknown = sorted(set(value) - set(keys))
        if unknown:
            allowed = ", ".join(sorted(keys))
            raise self.fail(where, f"unknown key(s) {', '.join(unknown)} (allowed: {allowed})")
        missing = [k for k, required in keys.items() if required and k not in value]
        if missing:
            raise self.fail(where, f"missing required key(s) {', '.join(missing)}")
        return value

    def check(self, problem: str | None, where: str) -> None:
        if problem is not None:
            raise self.fail(where, problem)

    def port(self, value: object, where: str) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise self.fail(where, f"must be an integer port, not {value!r}")
        if not 1 <= value <= 65535:
            raise self.fail(where, f"port {value} is outside 1-65535")
        return value

    def array(self, value: object, where: str) -> list[Any]:
        if not isinstance(value, list):
            raise self.fail(where, f"must be an array of tables ([[{where}]]), not {value!r}")
        return value


def _parse_server(c: _Checker, raw: object, project_name: str) -> ServerSpec:
    t = c.table(raw, "server", _SERVER_KEYS)
    name = t.get("name", "server")
    c.check(cell_name_problem(name), "server.name")
    if name == "ca":
        raise c.fail("server.name", "'ca' is reserved for the CA folder")
    c.check(host_problem(t["host"]), "server.host")
    fl_port = c.port(t["fl_port"], "server.fl_port")
    admin_port = c.port(t["admin_port"], "server.admin_port")
    if fl_port == admin_port:
        raise c.fail("server.admin_port", f"must differ from fl_port ({fl_port})")
    org = t.get("org", project_name)
    c.check(org_problem(org), "server.org")
    return ServerSpec(name, t["host"], fl_port, admin_port, org)


def _parse_site(c: _Checker, raw: object, where: str) -> Identity:
    t = c.table(raw, where, _SITE_KEYS)
    c.check(cell_name_problem(t["name"]), f"{where}.name")
    if t["name"] in RESERVED_SITE_NAMES:
        raise c.fail(f"{where}.name", f"{t['name']!r} is a reserved name")
    c.check(org_problem(t["org"]), f"{where}.org")
    return Identity(t["name"], t["org"], None, Kind.SITE)


def _parse_admin(c: _Checker, raw: object, where: str) -> Identity:
    t = c.table(raw, where, _ADMIN_KEYS)
    c.check(admin_name_problem(t["name"]), f"{where}.name")
    c.check(org_problem(t["org"]), f"{where}.org")
    try:
        role = Role(t["role"])
    except ValueError:
        allowed = ", ".join(r.value for r in Role)
        raise c.fail(f"{where}.role", f"{t['role']!r} is not one of {allowed}") from None
    return Identity(t["name"], t["org"], role, Kind.ADMIN)


def parse_project(data: Mapping[str, Any], source: str = "<project>") -> Project:
    """Validate an already-decoded project mapping (the TOML document)."""
    c = _Checker(source)
    top = c.table(data, "project", _TOP_KEYS)
    name = top["name"]
    c.check(cell_name_problem(name), "name")
    description = top.get("description", "")
    if not isinstance(description, str):
        raise c.fail("description", "must be a string")
    server = _parse_server(c, top["server"], name)
    sites = tuple(
        _parse_site(c, raw, f"sites[{i}]")
        for i, raw in enumerate(c.array(top.get("sites", []), "sites"))
    )
    admins = tuple(
        _parse_admin(c, raw, f"admins[{i}]")
        for i, raw in enumerate(c.array(top.get("admins", []), "admins"))
    )
    project = Project(name, server, sites, admins, description)
    seen: dict[str, Kind] = {}
    for p in project.participants:
        if p.name in seen:
            raise c.fail(
                "names", f"duplicate participant name {p.name!r} ({seen[p.name]} and {p.kind})"
            )
        seen[p.name] = p.kind
    return project


def parse_project_text(text: str, source: str = "<string>") -> Project:
    """Parse TOML text; TOML syntax errors become :class:`ProvisionError`."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ProvisionError(f"{source}: not valid TOML: {exc}") from exc
    return parse_project(data, source)


def load_project(path: str | os.PathLike[str]) -> Project:
    """Read and validate a project file."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as exc:
        raise ProvisionError(f"cannot read project file {os.fspath(path)!r}: {exc}") from exc
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProvisionError(f"{os.fspath(path)}: not UTF-8: {exc}") from exc
    return parse_project_text(text, os.fspath(path))
