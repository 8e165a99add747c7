"""provision_local: a loopback project with real kits in one call."""

from __future__ import annotations

from cellnet.security import StartupKit, load_project
from cellnet.security.local import local_project_text, provision_local


def test_local_project_text_parses_and_names_everyone(tmp_path):
    text = local_project_text("p", ["a", "b", "c"], fl_port=9100, admin_port=9101,
                              admins=[("ops@x.org", "x", "project_admin")])
    path = tmp_path / "p.toml"
    path.write_text(text)
    project = load_project(path)
    assert [s.name for s in project.sites] == ["a", "b", "c"]
    assert [s.org for s in project.sites] == ["org-1", "org-2", "org-3"]
    assert project.server.fl_port == 9100 and project.server.host == "127.0.0.1"
    assert [a.name for a in project.admins] == ["ops@x.org"]


def test_provision_local_makes_loadable_kits(tmp_path):
    kits = provision_local(tmp_path, "p", ["site-1"])
    assert (tmp_path / "project.toml").is_file()
    server = StartupKit.load(kits / "server")
    site = StartupKit.load(kits / "site-1")
    assert site.name == "site-1" and server.server.host == "127.0.0.1"
