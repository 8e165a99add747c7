"""Name rules for participants (cell names, admin identities, hosts, orgs), checked locally.

The cell-name rule mirrors one FQCN part (letters, digits, ``_`` and ``-``, at most
64 characters). It is written here rather than imported from ``cellnet.fqcn`` so
the security layer can validate certificates without depending on the router;
the two must stay in agreement. ``--`` is reserved (it separates a site from an
agent id in agent cell names), so a participant name may not contain it.
"""

from __future__ import annotations

import enum
import hashlib
import ipaddress
import re
from dataclasses import dataclass

MAX_NAME = 64  # X.509 upper bound for CN and O, and the FQCN part limit

_CELL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_ADMIN_NAME = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*")
_HOST_LABEL = re.compile(r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?")

#: Site names that would collide with the CA folder or the root cell.
RESERVED_SITE_NAMES = frozenset({"ca", "server"})
AGENT_SEPARATOR = "--"


class Kind(enum.StrEnum):
    """What a participant is; decides its certificate usages and how its name is checked."""

    SERVER = "server"
    SITE = "site"
    ADMIN = "admin"


class Role(enum.StrEnum):
    """Admin roles, with the reference string values."""

    PROJECT_ADMIN = "project_admin"
    ORG_ADMIN = "org_admin"
    LEAD = "lead"
    MEMBER = "member"


@dataclass(frozen=True)
class Identity:
    """Who a certificate (or a project entry) names: CN, O, admin role, and kind."""

    name: str
    org: str
    role: Role | None
    kind: Kind


def cell_name_problem(name: object) -> str | None:
    """Why ``name`` is not a valid cell (server/site) name, or None when it is."""
    if not isinstance(name, str):
        return f"must be a string, not {type(name).__name__}"
    if not _CELL_NAME.fullmatch(name):
        return (
            f"{name!r} is not a valid cell name "
            f"(1-{MAX_NAME} letters, digits, '_' or '-')"
        )
    if AGENT_SEPARATOR in name:
        return f"{name!r} contains {AGENT_SEPARATOR!r}, which is reserved for agent names"
    return None


def admin_name_problem(name: object) -> str | None:
    """Why ``name`` is not a valid admin identity (``user@domain``), or None."""
    if not isinstance(name, str):
        return f"must be a string, not {type(name).__name__}"
    if len(name) > MAX_NAME or not _ADMIN_NAME.fullmatch(name):
        return f"{name!r} is not an email-like admin identity (user@domain, at most {MAX_NAME})"
    return None


def org_problem(org: object) -> str | None:
    """Why ``org`` is not a valid organisation name, or None."""
    if not isinstance(org, str):
        return f"must be a string, not {type(org).__name__}"
    if not 1 <= len(org) <= MAX_NAME or not org.isprintable() or org != org.strip():
        return (
            f"{org!r} is not a valid org (1-{MAX_NAME} printable characters, "
            "no leading or trailing space)"
        )
    return None


def host_problem(host: object) -> str | None:
    """Why ``host`` is neither an IP address nor a DNS host name, or None."""
    if not isinstance(host, str):
        return f"must be a string, not {type(host).__name__}"
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        pass
    labels = host.split(".")
    if len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        return f"{host!r} is neither an IP address nor a valid DNS host name"
    return None


def name_problem(name: object, kind: Kind) -> str | None:
    """The rule that applies to a participant of ``kind``."""
    if kind is Kind.ADMIN:
        return admin_name_problem(name)
    return cell_name_problem(name)


def admin_cell_name(name: str) -> str:
    """The cell name of an admin (its identity, ``user@domain``, is not a valid cell name).

    ``admin-<name with every other character as '_'>-<8 hex digits of SHA-256 of the
    name>``: readable, deterministic, free of ``.`` and ``--``, and distinct for
    distinct admins.  Each connection announces it with an agent suffix
    (``<admin cell name>--<session>``) so one admin can hold several at once;
    the certificate still proves who it is.
    """
    problem = admin_name_problem(name)
    if problem is not None:
        raise ValueError(problem)
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return f"admin-{re.sub(r'[^A-Za-z0-9_]', '_', name)[:40]}-{digest}"


def site_part(fqcn: str) -> str:
    """The root element of an FQCN without any agent suffix: ``site-1.j1`` -> ``site-1``."""
    root = fqcn.split(".", 1)[0]
    return root.split(AGENT_SEPARATOR, 1)[0]


def fqcn_problem(fqcn: object) -> str | None:
    """Why ``fqcn`` is not a dot-joined path of valid parts, or None."""
    if not isinstance(fqcn, str):
        return f"must be a string, not {type(fqcn).__name__}"
    for part in fqcn.split("."):
        if not _CELL_NAME.fullmatch(part):
            return f"{fqcn!r} is not a valid cell name (bad part {part!r})"
    return None
