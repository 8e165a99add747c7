"""Provisioning: a project CA plus one startup kit per participant, safe to re-run.

Re-running on the same output directory only adds what is missing: an
existing CA, key or certificate that is consistent with the project is never
rewritten (byte-identical), so kits already handed out stay valid. Anything
inconsistent (a CA of another project, a cert from another CA, a changed org
or role, an expired cert, a server cert for another host) is an error that
names the participant and the problem, unless ``force`` is given, in which
case that part is regenerated. Only ``connection.json`` is refreshed in place
when the server's ports change.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509

from cellnet.errors import AuthError, ProvisionError
from cellnet.security import certs
from cellnet.security.identity import identity_from_cert
from cellnet.security.kit import CA_FILE, CERT_FILE, CONNECTION_FILE, KEY_FILE, connection_json
from cellnet.security.names import Identity, Kind
from cellnet.security.project import Project, load_project

CA_DIR = "ca"
CA_CERT = "ca.pem"
CA_KEY = "ca.key"


@dataclass(frozen=True)
class KitResult:
    """What happened to one kit: ``created``, ``kept``, ``reissued`` or ``config-updated``."""

    identity: Identity
    path: Path
    state: str


@dataclass(frozen=True)
class ProvisionResult:
    """The outcome of :func:`provision`; ``ca_state`` is ``created``, ``kept`` or ``replaced``."""

    project: Project
    out_dir: Path
    ca_state: str
    kits: tuple[KitResult, ...]

    @property
    def ca_dir(self) -> Path:
        return self.out_dir / CA_DIR

    def kit_dir(self, name: str) -> Path:
        """The folder of participant ``name``'s startup kit."""
        for k in self.kits:
            if k.identity.name == name:
                return k.path
        raise KeyError(name)

    def names(self, state: str) -> tuple[str, ...]:
        """Names of the kits that ended in ``state``."""
        return tuple(k.identity.name for k in self.kits if k.state == state)


def _expired(cert: x509.Certificate, now: dt.datetime) -> bool:
    return not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc


def _load_ca(out: Path, project: Project):
    """The CA already in ``out/ca`` as ``(key, cert, None)``, or ``(None, None, problem)``.

    ``problem`` is None when there is simply no CA yet.
    """
    ca_dir = out / CA_DIR
    cert_path, key_path = ca_dir / CA_CERT, ca_dir / CA_KEY
    if not (cert_path.exists() or key_path.exists()):
        return None, None, None
    if not (cert_path.exists() and key_path.exists()):
        return None, None, f"{ca_dir} is incomplete (need both {CA_CERT} and {CA_KEY})"
    try:
        key, cert = certs.load_key(key_path), certs.load_cert_file(cert_path)
    except ProvisionError as exc:
        return None, None, str(exc)
    cn = cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)
    if not certs.same_public_key(cert, key):
        return None, None, f"{ca_dir}: {CA_KEY} does not match {CA_CERT}"
    if not cn or cn[0].value != project.name:
        owner = cn[0].value if cn else "?"
        return None, None, f"{ca_dir} holds the CA of project {owner!r}, not {project.name!r}"
    if _expired(cert, dt.datetime.now(dt.UTC)):
        return None, None, f"the CA in {ca_dir} is expired"
    return key, cert, None


def _kit_problem(kit: Path, identity: Identity, host: str | None, ca_cert) -> str | None:
    """Why the existing cert in ``kit`` cannot be kept, or None when it can."""
    cert_path, key_path, ca_path = kit / CERT_FILE, kit / KEY_FILE, kit / CA_FILE
    if not key_path.exists():
        return f"{CERT_FILE} exists without {KEY_FILE}"
    cert = certs.load_cert_file(cert_path)
    if not certs.issued_by(cert, ca_cert):
        return "its certificate was issued by a different CA"
    if ca_path.exists() and ca_path.read_bytes() != certs.cert_pem(ca_cert):
        return f"its {CA_FILE} is not this project's CA"
    if not certs.same_public_key(cert, certs.load_key(key_path)):
        return f"{KEY_FILE} does not match {CERT_FILE}"
    try:
        found = identity_from_cert(cert)
    except AuthError as exc:
        return f"its certificate has no valid identity ({exc})"
    if found != identity:
        return f"its certificate names {found}, the project says {identity}"
    if _expired(cert, dt.datetime.now(dt.UTC)):
        return "its certificate is expired or not yet valid"
    if host is not None:
        try:
            sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return "its server certificate has no subject alternative name"
        if set(sans) != set(certs.server_sans(host)):
            return f"its server certificate is not for host {host!r}"
    return None


@dataclass(frozen=True)
class _KitPlan:
    """What to do with one kit, decided before anything is written."""

    identity: Identity
    path: Path
    host: str | None
    action: str  # "create" (reusing a key left behind when ``reuse_key``), "keep", "reissue"
    reuse_key: bool = False
    problem: str | None = None


def _plan_kit(out: Path, project: Project, identity: Identity, ca_cert) -> _KitPlan:
    kit = out / identity.name
    host = project.server.host if identity.kind is Kind.SERVER else None
    cert_path, key_path = kit / CERT_FILE, kit / KEY_FILE
    if cert_path.exists():
        try:
            problem = _kit_problem(kit, identity, host, ca_cert)
        except ProvisionError as exc:  # unreadable key or cert
            problem = str(exc)
        if problem is None:
            return _KitPlan(identity, kit, host, "keep")
        return _KitPlan(identity, kit, host, "reissue", problem=f"startup kit {kit}: {problem}")
    if key_path.exists():  # left by an interrupted run: keep the key if it is sound
        try:
            certs.load_key(key_path)
        except ProvisionError as exc:
            return _KitPlan(identity, kit, host, "reissue", problem=f"startup kit {kit}: {exc}")
        return _KitPlan(identity, kit, host, "create", reuse_key=True)
    return _KitPlan(identity, kit, host, "create")


_STATE = {"create": "created", "keep": "kept", "reissue": "reissued"}


def _apply_kit(plan: _KitPlan, project: Project, ca_key, ca_cert) -> KitResult:
    kit = plan.path
    certs.make_private_dir(kit)
    cert_path, key_path = kit / CERT_FILE, kit / KEY_FILE
    state = _STATE[plan.action]
    if plan.action != "keep":
        if plan.reuse_key:
            key = certs.load_key(key_path)
        else:
            key = certs.new_key()
            certs.write_private(key_path, certs.key_pem(key), overwrite=key_path.exists())
        cert = certs.issue_cert(ca_key, ca_cert, plan.identity, key.public_key(), host=plan.host)
        certs.write_public(cert_path, certs.cert_pem(cert), overwrite=cert_path.exists())
    if key_path.stat().st_mode & 0o077:
        os.chmod(key_path, 0o600)
    ca_pem, ca_path = certs.cert_pem(ca_cert), kit / CA_FILE
    if not ca_path.exists() or ca_path.read_bytes() != ca_pem:
        certs.write_public(ca_path, ca_pem, overwrite=True)
    conn_path, conn = kit / CONNECTION_FILE, connection_json(project, plan.identity)
    if not conn_path.exists() or conn_path.read_bytes() != conn:
        if state == "kept":
            state = "config-updated"
        certs.write_public(conn_path, conn, overwrite=True)
    return KitResult(plan.identity, kit, state)


def provision(
    project_file: str | os.PathLike[str] | Project,
    out_dir: str | os.PathLike[str],
    *,
    force: bool = False,
) -> ProvisionResult:
    """Create or extend the CA and startup kits for ``project_file`` under ``out_dir``.

    Everything is checked before anything is written: on an error the output
    directory is left as it was.
    """
    project = project_file if isinstance(project_file, Project) else load_project(project_file)
    out = Path(out_dir)
    ca_key, ca_cert, problem = _load_ca(out, project) if out.exists() else (None, None, None)
    if problem is not None and not force:
        raise ProvisionError(
            f"{problem}; use another output directory or force (--force) to replace it"
        )
    ca_state = "kept"
    if ca_cert is None:
        ca_state = "replaced" if problem else "created"
        ca_key, ca_cert = certs.make_ca(project.name)
    plans = [_plan_kit(out, project, identity, ca_cert) for identity in project.participants]
    problems = [p.problem for p in plans if p.problem]
    if problems and not force:
        raise ProvisionError(
            "; ".join(problems) + "; remove those folders or force (--force) to reissue them"
        )
    try:
        out.mkdir(parents=True, exist_ok=True)
        if ca_state != "kept":
            ca_dir = out / CA_DIR
            certs.make_private_dir(ca_dir)
            replace = ca_state == "replaced"
            certs.write_private(ca_dir / CA_KEY, certs.key_pem(ca_key), overwrite=replace)
            certs.write_public(ca_dir / CA_CERT, certs.cert_pem(ca_cert), overwrite=replace)
        kits = tuple(_apply_kit(plan, project, ca_key, ca_cert) for plan in plans)
    except OSError as exc:
        raise ProvisionError(f"cannot write the startup kits under {out}: {exc}") from exc
    return ProvisionResult(project, out, ca_state, kits)


def _describe(identity: Identity) -> str:
    role = f", role {identity.role}" if identity.role else ""
    return f"{identity.kind} {identity.name} (org {identity.org}{role})"


def provision_main(argv: Sequence[str] | None = None) -> int:
    """``cellnet provision <project.toml> -o <dir> [--force]``; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="cellnet provision",
        description="Create a project CA and one startup kit per participant. "
        "Re-running adds new participants and keeps existing keys and certificates.",
    )
    parser.add_argument("project", help="project file (TOML)")
    parser.add_argument("-o", "--out", required=True, help="output directory for the kits")
    parser.add_argument(
        "--force",
        action="store_true",
        help="replace a CA or kits that do not match the project (invalidates them)",
    )
    args = parser.parse_args(argv)
    try:
        result = provision(args.project, args.out, force=args.force)
    except ProvisionError as exc:
        print(f"cellnet provision: error: {exc}", file=sys.stderr)
        return 2
    print(f"project {result.project.name}: CA {result.ca_state} in {result.ca_dir}")
    for k in result.kits:
        print(f"  {k.state:<15} {_describe(k.identity)} -> {k.path}")
    return 0
