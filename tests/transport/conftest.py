"""Fixtures for the transport tests: provisioned kits (session-wide) and TLS contexts."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pytest

from cellnet.security import StartupKit, client_context, provision, server_context
from cellnet.security.certs import cert_pem, issue_cert, load_cert_file, load_key

PROJECT = """\
name = "{name}"

[server]
host = "localhost"
fl_port = 8002
admin_port = 8003

[[sites]]
name = "site-1"
org = "org-a"

[[sites]]
name = "site-2"
org = "org-b"
"""


def _provision(root: Path, name: str) -> Path:
    project = root / "project.toml"
    project.write_text(PROJECT.format(name=name))
    provision(project, root / "out")
    return root / "out"


@pytest.fixture(scope="session")
def kits(tmp_path_factory) -> Path:
    """Kits of project "demo": server, site-1, site-2."""
    return _provision(tmp_path_factory.mktemp("kits"), "demo")


@pytest.fixture(scope="session")
def other_kits(tmp_path_factory) -> Path:
    """The same participants under another CA."""
    return _provision(tmp_path_factory.mktemp("other"), "demo")


@pytest.fixture(scope="session")
def expired_site_kit(kits, tmp_path_factory) -> StartupKit:
    """site-1's kit with a certificate (same key, same CA) whose validity ended yesterday."""
    dst = tmp_path_factory.mktemp("expired") / "site-1"
    shutil.copytree(kits / "site-1", dst)
    kit = StartupKit.load(dst)
    now = dt.datetime.now(dt.UTC)
    cert = issue_cert(
        load_key(kits / "ca" / "ca.key"), load_cert_file(kits / "ca" / "ca.pem"), kit.identity,
        load_key(kit.key_path).public_key(), host=None,
        not_before=now - dt.timedelta(days=30), not_after=now - dt.timedelta(days=1),
    )
    kit.cert_path.write_bytes(cert_pem(cert))
    return kit


@pytest.fixture(scope="session")
def server_ctx(kits):
    return server_context(kits / "server")


@pytest.fixture(scope="session")
def client_ctx(kits):
    return client_context(kits / "site-1")
