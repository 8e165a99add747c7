"""Project file parsing: typed results, and a precise ProvisionError for every bad input."""

from __future__ import annotations

import dataclasses

import pytest

from cellnet.errors import CellnetError, ProvisionError
from cellnet.security import Kind, Role, load_project, parse_project_text, provision

GOOD = """\
name = "demo"
description = "a test federation"

[server]
host = "127.0.0.1"
fl_port = 8002
admin_port = 8003

[[sites]]
name = "site-1"
org = "org-a"

[[sites]]
name = "Site_2"
org = "Org B"

[[admins]]
name = "lead@org-b.example.com"
org = "Org B"
role = "lead"
"""

SERVER = '[server]\nhost = "localhost"\nfl_port = 1\nadmin_port = 2\n'


def test_good_project_parses_to_frozen_dataclasses():
    p = parse_project_text(GOOD)
    assert p.name == "demo" and p.description == "a test federation"
    assert p.server.name == "server" and p.server.org == "demo"  # defaults
    assert (p.server.host, p.server.fl_port, p.server.admin_port) == ("127.0.0.1", 8002, 8003)
    assert [s.name for s in p.sites] == ["site-1", "Site_2"]
    assert p.sites[1].org == "Org B" and p.sites[1].kind is Kind.SITE
    (admin,) = p.admins
    assert admin.role is Role.LEAD and admin.kind is Kind.ADMIN
    assert [x.kind for x in p.participants] == [Kind.SERVER, Kind.SITE, Kind.SITE, Kind.ADMIN]
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.name = "x"  # type: ignore[misc]


def test_server_name_and_org_can_be_set():
    p = parse_project_text(
        'name = "p"\n[server]\nname = "hub"\norg = "acme"\nhost = "fl.example.com"\n'
        "fl_port = 9000\nadmin_port = 9001\n"
    )
    assert (p.server.name, p.server.org, p.sites, p.admins) == ("hub", "acme", (), ())


def _site(name: str, org: str = "o") -> str:
    return f'[[sites]]\nname = "{name}"\norg = "{org}"\n'


BAD = [
    # (project text, fragment the message must contain)
    ("name = 'p'\nnmae = 1\n" + SERVER, "unknown key(s) nmae"),
    ('name = "p"\n' + SERVER + '[[sites]]\nname = "s"\norg = "o"\norgs = "x"\n',
     "sites[0]: unknown key(s) orgs"),
    ('name = "p"\n', "missing required key(s) server"),
    ('name = "p"\n[server]\nfl_port = 1\nadmin_port = 2\n', "server: missing required key(s) host"),
    ('name = "p"\nserver = 3\n', "server: must be a table"),
    ('name = "p"\n' + SERVER + _site("site 1"), "sites[0].name: 'site 1' is not a valid cell name"),
    ('name = "p"\n' + SERVER + _site("a.b"), "'a.b' is not a valid cell name"),
    ('name = "p"\n' + SERVER + _site("s" * 65), "is not a valid cell name"),
    ('name = "p"\n' + SERVER + _site(""), "'' is not a valid cell name"),
    ('name = "p"\n' + SERVER + _site("a--b"), "reserved for agent names"),
    ('name = "p"\n' + SERVER + _site("ca"), "'ca' is a reserved name"),
    ('name = "p"\n' + SERVER + _site("s1") + _site("s2") + _site("s1"),
     "duplicate participant name 's1' (site and site)"),
    ('name = "p"\n' + SERVER + _site("server"), "reserved name"),
    ('name = "p"\n' + SERVER.replace('host = "localhost"', 'host = "localhost"\nname = "hub"')
     + _site("hub"), "duplicate participant name 'hub' (server and site)"),
    ('name = "p"\n' + SERVER + _site("s1", org=""), "sites[0].org: '' is not a valid org"),
    ('name = "p"\n' + SERVER + _site("s1", org="acme "), "is not a valid org"),
    ('name = "p"\nsites = "s1"\n' + SERVER, "sites: must be an array of tables"),
    ('name = "p"\n' + SERVER.replace("fl_port = 1", "fl_port = 0"), "port 0 is outside 1-65535"),
    ('name = "p"\n' + SERVER.replace("fl_port = 1", "fl_port = 70000"), "outside 1-65535"),
    ('name = "p"\n' + SERVER.replace("fl_port = 1", 'fl_port = "8002"'),
     "server.fl_port: must be an integer port"),
    ('name = "p"\n' + SERVER.replace("fl_port = 1", "fl_port = true"), "must be an integer port"),
    ('name = "p"\n' + SERVER.replace("admin_port = 2", "admin_port = 1"),
     "server.admin_port: must differ from fl_port"),
    ('name = "p"\n' + SERVER.replace('"localhost"', '"bad host"'), "server.host: 'bad host'"),
    ('name = "p"\n' + SERVER.replace('"localhost"', '"-x.com"'), "nor a valid DNS host name"),
    ('name = "p p"\n' + SERVER, "name: 'p p' is not a valid cell name"),
    ('name = "p"\n' + SERVER + '[[admins]]\nname = "bob"\norg = "o"\nrole = "lead"\n',
     "admins[0].name: 'bob' is not an email-like admin identity"),
    ('name = "p"\n' + SERVER + '[[admins]]\nname = "b@x.org"\norg = "o"\nrole = "boss"\n',
     "admins[0].role: 'boss' is not one of project_admin, org_admin, lead, member"),
    ('name = "p"\n' + SERVER + '[[admins]]\nname = "b@x.org"\norg = "o"\n',
     "admins[0]: missing required key(s) role"),
    ('name = "p"\n' + SERVER + "[[admins]]\nname = 'b@x.org'\norg = 'o'\nrole = 'member'\n"
     "[[admins]]\nname = 'b@x.org'\norg = 'o'\nrole = 'lead'\n",
     "duplicate participant name 'b@x.org'"),
    ("name = \n", "not valid TOML"),
]


@pytest.mark.parametrize(("text", "fragment"), BAD, ids=[f for _, f in BAD])
def test_bad_project_raises_provision_error_saying_what(text, fragment):
    with pytest.raises(ProvisionError) as info:
        parse_project_text(text, source="proj.toml")
    msg = str(info.value)
    assert fragment in msg
    assert msg.startswith("proj.toml: ")
    assert isinstance(info.value, ValueError) and isinstance(info.value, CellnetError)


def test_load_project_reports_missing_and_non_utf8_files(tmp_path):
    with pytest.raises(ProvisionError, match="cannot read project file"):
        load_project(tmp_path / "nope.toml")
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'name = "caf\xe9"\n')
    with pytest.raises(ProvisionError, match="not UTF-8"):
        load_project(bad)


def test_bad_project_creates_nothing(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "p"\n' + SERVER + _site("no good"))
    with pytest.raises(ProvisionError):
        provision(bad, tmp_path / "out")
    assert not (tmp_path / "out").exists()
