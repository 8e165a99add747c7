"""A startup kit on disk: one participant's cert, key, the CA cert and its connection config.

Layout of ``<out_dir>/<name>/``::

    cert.pem          this participant's certificate (0644)
    key.pem           its private key (0600)
    ca.pem            the project CA certificate (0644)
    connection.json   where the server is, who this participant is

Everything a process needs to join the federation is in that one folder.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cellnet.errors import ProvisionError
from cellnet.security.names import Identity, Kind, Role
from cellnet.security.project import Project, ServerSpec

CERT_FILE = "cert.pem"
KEY_FILE = "key.pem"
CA_FILE = "ca.pem"
CONNECTION_FILE = "connection.json"
FORMAT = 1


@dataclass(frozen=True)
class StartupKit:
    """A loaded kit: paths of its files plus the decoded connection config."""

    path: Path
    project: str
    identity: Identity
    server: ServerSpec

    @property
    def name(self) -> str:
        return self.identity.name

    @property
    def kind(self) -> Kind:
        return self.identity.kind

    @property
    def cert_path(self) -> Path:
        return self.path / CERT_FILE

    @property
    def key_path(self) -> Path:
        return self.path / KEY_FILE

    @property
    def ca_path(self) -> Path:
        return self.path / CA_FILE

    @property
    def server_hostname(self) -> str:
        """The name a client passes as ``server_hostname`` (checked against the server SAN)."""
        return self.server.host

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> StartupKit:
        """Read ``connection.json`` and check the cert/key/CA files are present."""
        path = Path(path)
        conn = path / CONNECTION_FILE
        try:
            data = json.loads(conn.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise ProvisionError(f"{path} is not a startup kit: cannot read {conn}: {exc}") from exc
        kit = _from_json(path, data)
        for f in (kit.cert_path, kit.key_path, kit.ca_path):
            if not f.is_file():
                raise ProvisionError(f"startup kit {path} is incomplete: {f.name} missing")
        return kit


def connection_json(project: Project, identity: Identity) -> bytes:
    """The connection config of one participant, as stable, sorted JSON bytes."""
    s = project.server
    doc = {
        "format": FORMAT,
        "project": project.name,
        "name": identity.name,
        "kind": identity.kind.value,
        "org": identity.org,
        "role": identity.role.value if identity.role else None,
        "server": {
            "name": s.name,
            "host": s.host,
            "fl_port": s.fl_port,
            "admin_port": s.admin_port,
            "org": s.org,
        },
    }
    return (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()


def _from_json(path: Path, data: Any) -> StartupKit:
    try:
        if data["format"] != FORMAT:
            raise ProvisionError(f"{path}: unsupported kit format {data['format']!r}")
        role = Role(data["role"]) if data["role"] is not None else None
        identity = Identity(data["name"], data["org"], role, Kind(data["kind"]))
        s = data["server"]
        server = ServerSpec(s["name"], s["host"], int(s["fl_port"]), int(s["admin_port"]), s["org"])
        return StartupKit(path, data["project"], identity, server)
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ProvisionError):
            raise
        raise ProvisionError(f"{path}/{CONNECTION_FILE} is malformed: {exc!r}") from exc
