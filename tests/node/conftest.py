"""Fixtures for the node tests: kits of two projects, provisioned once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from cellnet.security import provision

PROJECT = """\
name = "{name}"

[server]
host = "127.0.0.1"
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


def _provision(root: Path, name: str) -> Path:
    project = root / "project.toml"
    project.write_text(PROJECT.format(name=name))
    provision(project, root / "out")
    return root / "out"


@pytest.fixture(scope="session")
def kits(tmp_path_factory) -> Path:
    """Kits of project "demo": server, site-1, site-2, admin@org-a.com."""
    return _provision(tmp_path_factory.mktemp("nodekits"), "demo")


@pytest.fixture(scope="session")
def foreign_kits(tmp_path_factory) -> Path:
    """The same participants under another project's CA."""
    return _provision(tmp_path_factory.mktemp("foreign"), "other")
