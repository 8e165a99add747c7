"""Fixtures of the runtime tests: one provisioned project (server, site-1, site-2, site-3)."""

from __future__ import annotations

from pathlib import Path

import pytest

from cellnet.security.local import provision_local


@pytest.fixture(scope="session")
def kits(tmp_path_factory) -> Path:
    return provision_local(tmp_path_factory.mktemp("rtkits"), "rt",
                           ("site-1", "site-2", "site-3"))
