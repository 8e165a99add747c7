"""Fixtures for the node tests: kits of two projects, provisioned once per session."""

from __future__ import annotations

from pathlib import Path

import pytest

from cellnet.security.local import provision_local


def _provision(root: Path, name: str) -> Path:
    return provision_local(root, name, admins=[("admin@org-a.com", "org-a", "project_admin")])


@pytest.fixture(scope="session")
def kits(tmp_path_factory) -> Path:
    """Kits of project "demo": server, site-1, site-2, admin@org-a.com."""
    return _provision(tmp_path_factory.mktemp("nodekits"), "demo")


@pytest.fixture(scope="session")
def foreign_kits(tmp_path_factory) -> Path:
    """The same participants under another project's CA."""
    return _provision(tmp_path_factory.mktemp("foreign"), "other")
