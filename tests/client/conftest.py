"""Fixtures of the client tests: a provisioned project, the runtime tests' federation helper."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from cellnet.security.local import provision_local

# federation() of tests/fl/runtime/rt_helpers.py: server + sites in this process, job cells
# (and the training processes they start) as real processes.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "fl" / "runtime"))


@pytest.fixture(scope="session")
def kits(tmp_path_factory) -> Path:
    return provision_local(tmp_path_factory.mktemp("agentkits"), "agents",
                           ("site-1", "site-2", "site-3"))
