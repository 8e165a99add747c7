"""Fixtures for the security tests: provisioned projects, doctored kits, in-memory TLS pairs."""

from __future__ import annotations

import datetime as dt
import shutil
import ssl
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cellnet.security import StartupKit, provision
from cellnet.security.certs import cert_pem, issue_cert, load_cert_file, load_key

BASE_PROJECT = """\
name = "{name}"

[server]
host = "{host}"
fl_port = 8002
admin_port = 8003

[[sites]]
name = "site-1"
org = "org-a"

[[sites]]
name = "site-2"
org = "org-b"

[[admins]]
name = "admin@org-a.com"
org = "org-a"
role = "project_admin"
"""


def project_text(name: str = "demo", host: str = "localhost", extra: str = "") -> str:
    return BASE_PROJECT.format(name=name, host=host) + extra


def write_project(path: Path, **kw) -> Path:
    path.write_text(project_text(**kw))
    return path


@pytest.fixture(scope="module")
def kits(tmp_path_factory) -> Path:
    """Output directory of a provisioned project "demo" (server, site-1, site-2, admin)."""
    root = tmp_path_factory.mktemp("demo")
    provision(write_project(root / "project.toml"), root / "out")
    return root / "out"


@pytest.fixture(scope="module")
def other_kits(tmp_path_factory) -> Path:
    """A second project with the *same* name and participants but its own CA."""
    root = tmp_path_factory.mktemp("other")
    provision(write_project(root / "project.toml"), root / "out")
    return root / "out"


def reissue_kit(out: Path, name: str, dst: Path, *, not_before, not_after) -> StartupKit:
    """Copy kit ``name`` to ``dst`` with a cert re-signed by the project CA for other dates."""
    shutil.copytree(out / name, dst)
    kit = StartupKit.load(dst)
    ca_key, ca_cert = load_key(out / "ca" / "ca.key"), load_cert_file(out / "ca" / "ca.pem")
    host = kit.server.host if kit.kind == "server" else None
    cert = issue_cert(
        ca_key, ca_cert, kit.identity, load_key(kit.key_path).public_key(),
        host=host, not_before=not_before, not_after=not_after,
    )
    kit.cert_path.write_bytes(cert_pem(cert))
    return kit


@pytest.fixture
def expired_kit(kits, tmp_path):
    """Factory: an expired copy of a kit of ``kits`` (validity ended a day ago)."""

    def make(name: str) -> StartupKit:
        now = dt.datetime.now(dt.UTC)
        return reissue_kit(
            kits, name, tmp_path / f"expired-{name}",
            not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(days=1),
        )

    return make


@dataclass
class TLSPair:
    """Outcome of a driven handshake: both SSLObjects and the error each side saw."""

    client: ssl.SSLObject
    server: ssl.SSLObject
    errors: dict[str, ssl.SSLError] = field(default_factory=dict)
    received: dict[str, bytes] = field(default_factory=dict)


def tls_pair(cctx: ssl.SSLContext, sctx: ssl.SSLContext, hostname: str | None) -> TLSPair:
    """Run a full TLS handshake between two contexts over MemoryBIOs, then swap one message.

    The data exchange matters: in TLS 1.3 the client finishes its handshake
    before the server has checked the client's certificate, so a rejection
    reaches the client only when it next reads.
    """
    bios = {side: (ssl.MemoryBIO(), ssl.MemoryBIO()) for side in ("client", "server")}
    pair = TLSPair(
        cctx.wrap_bio(*bios["client"], server_side=False, server_hostname=hostname),
        sctx.wrap_bio(*bios["server"], server_side=True),
    )
    done = {"client": False, "server": False}
    peer = {"client": "server", "server": "client"}
    for _ in range(12):
        for side in ("client", "server"):
            obj = getattr(pair, side)
            if side not in pair.errors:
                try:
                    if not done[side]:
                        obj.do_handshake()
                        done[side] = True
                        obj.write(f"hello from {side}".encode())
                    else:
                        pair.received[side] = pair.received.get(side, b"") + obj.read(1024)
                except (ssl.SSLWantReadError, ssl.SSLZeroReturnError):
                    pass
                except ssl.SSLError as exc:
                    pair.errors[side] = exc
            data = bios[side][1].read()
            if data:
                bios[peer[side]][0].write(data)
    return pair


@pytest.fixture
def handshake():
    """The :func:`tls_pair` driver, as a fixture (test modules cannot import conftest)."""
    return tls_pair


@pytest.fixture
def make_project(tmp_path):
    """Factory writing a project file (the base project plus ``extra`` TOML) under tmp_path."""

    def make(filename: str = "project.toml", **kw) -> Path:
        return write_project(tmp_path / filename, **kw)

    return make
