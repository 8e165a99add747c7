"""Fixtures of the e2e tests: kits provisioned once, a running network, process cleanup."""

from __future__ import annotations

from pathlib import Path

import pytest
from e2e_helpers import Procs, make_kits

from cellnet.security import StartupKit


@pytest.fixture(scope="session")
def kits(tmp_path_factory) -> Path:
    """Kits of project "e2e": server (127.0.0.1, a free fl_port), site-1, site-2, site-3."""
    return make_kits(tmp_path_factory.mktemp("e2ekits"), "e2e")


@pytest.fixture(scope="session")
def foreign_kits(tmp_path_factory) -> Path:
    """The same participant names under another project's CA."""
    return make_kits(tmp_path_factory.mktemp("foreign"), "e2e")


@pytest.fixture
def procs(tmp_path):
    """Start `cellnet run` processes; every one (and its process group) is killed at teardown."""
    p = Procs(tmp_path)
    try:
        yield p
    finally:
        p.cleanup()


@pytest.fixture(scope="module")
def network(kits, tmp_path_factory):
    """server + site-1 + site-2, each site with job-like child cell J1; site-3 stays absent."""
    p = Procs(tmp_path_factory.mktemp("network"))
    try:
        port = server_port(kits)
        server = p.run(kits / "server", "--port", str(port), name="server")
        server.wait_for_output("running")
        sites = [p.run(kits / s, "--port", str(port), "--job", "J1", name=s)
                 for s in ("site-1", "site-2")]
        for name, site in zip(("site-1", "site-2"), sites, strict=True):
            site.wait_for_output(f"cell {name} running")  # not the child's own "running" line
        yield {"port": port, "server": server, "sites": sites}
    finally:
        p.cleanup()


def server_port(kits: Path) -> int:
    return StartupKit.load(kits / "server").server.fl_port
