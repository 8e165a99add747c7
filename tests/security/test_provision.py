"""Provisioning: kit layout, file modes, identities in certs, safe and idempotent re-runs."""

from __future__ import annotations

import ipaddress
import json
import os
import stat
from pathlib import Path

import pytest
from cryptography import x509

from cellnet.errors import ProvisionError
from cellnet.security import (
    Identity,
    Kind,
    Role,
    StartupKit,
    identity_from_cert,
    provision,
    provision_main,
)
from cellnet.security import certs as certs_mod
from cellnet.security.certs import issued_by, load_cert_file, load_key, same_public_key

NAMES = ["server", "site-1", "site-2", "admin@org-a.com"]
EXTRA = '\n[[sites]]\nname = "site-3"\norg = "org-c"\n'


def _mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def _snapshot(out: Path) -> dict[str, bytes]:
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_layout_and_permissions(kits):
    assert sorted(p.name for p in kits.iterdir()) == sorted([*NAMES, "ca"])
    assert _mode(kits / "ca") == 0o700
    assert _mode(kits / "ca" / "ca.key") == 0o600
    assert _mode(kits / "ca" / "ca.pem") == 0o644
    ca_pem = (kits / "ca" / "ca.pem").read_bytes()
    for name in NAMES:
        kit = kits / name
        assert sorted(p.name for p in kit.iterdir()) == [
            "ca.pem", "cert.pem", "connection.json", "key.pem"
        ]
        assert _mode(kit) == 0o700
        assert _mode(kit / "key.pem") == 0o600
        assert (kit / "ca.pem").read_bytes() == ca_pem
    assert not list(kits.rglob(".*.tmp"))


def test_certs_carry_identities_and_chain_to_the_ca(kits):
    ca = load_cert_file(kits / "ca" / "ca.pem")
    assert ca.subject.rfc4514_string() == "O=demo,CN=demo"
    expected = {
        "server": Identity("server", "demo", None, Kind.SERVER),
        "site-1": Identity("site-1", "org-a", None, Kind.SITE),
        "site-2": Identity("site-2", "org-b", None, Kind.SITE),
        "admin@org-a.com": Identity("admin@org-a.com", "org-a", Role.PROJECT_ADMIN, Kind.ADMIN),
    }
    for name, identity in expected.items():
        cert = load_cert_file(kits / name / "cert.pem")
        assert identity_from_cert(cert) == identity
        assert issued_by(cert, ca)
        assert same_public_key(cert, load_key(kits / name / "key.pem"))
        kit = StartupKit.load(kits / name)
        assert kit.identity == identity and kit.project == "demo"
        assert (kit.server.host, kit.server.fl_port, kit.server.admin_port) == (
            "localhost", 8002, 8003,
        )


def test_connection_config_says_who_and_where(kits):
    doc = json.loads((kits / "admin@org-a.com" / "connection.json").read_text())
    assert doc["name"] == "admin@org-a.com" and doc["kind"] == "admin"
    assert doc["role"] == "project_admin" and doc["project"] == "demo"
    assert doc["server"] == {
        "name": "server", "host": "localhost", "fl_port": 8002, "admin_port": 8003, "org": "demo",
    }


def _sans(path: Path) -> set:
    cert = load_cert_file(path)
    return set(cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value)


def test_server_san_covers_its_host(kits, make_project, tmp_path):
    assert _sans(kits / "server" / "cert.pem") == {
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    }
    provision(make_project(host="127.0.0.1"), tmp_path / "ip")
    assert _sans(tmp_path / "ip" / "server" / "cert.pem") == {
        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
    }
    with pytest.raises(x509.ExtensionNotFound):
        load_cert_file(kits / "site-1" / "cert.pem").extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        )


def test_rerun_is_byte_identical(make_project, tmp_path):
    project = make_project()
    first = provision(project, tmp_path / "out")
    assert first.ca_state == "created" and first.names("created") == tuple(NAMES)
    before = _snapshot(tmp_path / "out")
    again = provision(project, tmp_path / "out")
    assert again.ca_state == "kept" and again.names("kept") == tuple(NAMES)
    assert _snapshot(tmp_path / "out") == before


def test_extended_project_adds_only_new_kits(make_project, tmp_path):
    provision(make_project(), tmp_path / "out")
    before = _snapshot(tmp_path / "out")
    extra = EXTRA + '\n[[admins]]\nname = "ops@org-c.com"\norg = "org-c"\nrole = "member"\n'
    result = provision(make_project("p2.toml", extra=extra), tmp_path / "out")
    assert result.names("created") == ("site-3", "ops@org-c.com")
    assert result.names("kept") == tuple(NAMES)
    after = _snapshot(tmp_path / "out")
    assert {k: after[k] for k in before} == before
    site3 = load_cert_file(result.kit_dir("site-3") / "cert.pem")
    assert issued_by(site3, load_cert_file(tmp_path / "out" / "ca" / "ca.pem"))


def test_port_change_refreshes_only_connection_config(make_project, tmp_path):
    provision(make_project(), tmp_path / "out")
    before = _snapshot(tmp_path / "out")
    moved = make_project("moved.toml")
    moved.write_text(moved.read_text().replace("8003", "9003"))
    result = provision(moved, tmp_path / "out")
    assert result.names("config-updated") == tuple(NAMES)
    after = _snapshot(tmp_path / "out")
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {f"{n}/connection.json" for n in NAMES}
    assert StartupKit.load(tmp_path / "out" / "site-1").server.admin_port == 9003


def test_ca_of_another_project_is_refused_unless_forced(make_project, tmp_path):
    out = tmp_path / "out"
    provision(make_project(), out)
    before = _snapshot(out)
    other = make_project("other.toml", name="other")
    with pytest.raises(ProvisionError, match="holds the CA of project 'demo', not 'other'"):
        provision(other, out)
    assert _snapshot(out) == before
    result = provision(other, out, force=True)
    assert result.ca_state == "replaced" and result.names("reissued") == tuple(NAMES)
    new_ca = load_cert_file(out / "ca" / "ca.pem")
    for name in NAMES:
        assert issued_by(load_cert_file(out / name / "cert.pem"), new_ca)
        assert (out / name / "ca.pem").read_bytes() == (out / "ca" / "ca.pem").read_bytes()
        assert (out / name / "key.pem").read_bytes() != before[f"{name}/key.pem"]


def test_kit_from_another_ca_is_refused_unless_forced(make_project, tmp_path, other_kits):
    out = tmp_path / "out"
    provision(make_project(), out)
    for f in ("cert.pem", "key.pem"):
        (out / "site-2" / f).write_bytes((other_kits / "site-2" / f).read_bytes())
    with pytest.raises(ProvisionError, match=r"site-2: its certificate was issued by a different"):
        provision(make_project(), out)
    result = provision(make_project(), out, force=True)
    assert result.names("reissued") == ("site-2",)


def test_changed_org_or_role_is_refused_unless_forced(make_project, tmp_path):
    out = tmp_path / "out"
    provision(make_project(), out)
    before = _snapshot(out)
    changed = make_project("changed.toml", extra=EXTRA)  # a new site *and* a changed role
    changed.write_text(changed.read_text().replace('"project_admin"', '"member"'))
    with pytest.raises(ProvisionError, match=r"admin@org-a\.com: its certificate names"):
        provision(changed, out)
    assert _snapshot(out) == before and not (out / "site-3").exists()  # nothing half-done
    result = provision(changed, out, force=True)
    assert result.names("reissued") == ("admin@org-a.com",)
    assert result.names("created") == ("site-3",)
    assert identity_from_cert(
        (out / "admin@org-a.com" / "cert.pem").read_bytes()
    ).role is Role.MEMBER


def test_incomplete_ca_is_refused(make_project, tmp_path):
    out = tmp_path / "out"
    provision(make_project(), out)
    (out / "ca" / "ca.key").unlink()
    with pytest.raises(ProvisionError, match="is incomplete"):
        provision(make_project(), out)


def test_kits_without_their_ca_are_refused_unless_forced(make_project, tmp_path):
    out = tmp_path / "out"
    provision(make_project(), out)
    for f in (out / "ca").iterdir():
        f.unlink()
    with pytest.raises(ProvisionError, match="issued by a different CA"):
        provision(make_project(), out)
    assert not list((out / "ca").iterdir())
    result = provision(make_project(), out, force=True)
    assert result.ca_state == "created" and result.names("reissued") == tuple(NAMES)


def test_unreadable_key_is_refused_unless_forced(make_project, tmp_path):
    out = tmp_path / "out"
    provision(make_project(), out)
    (out / "site-1" / "key.pem").write_bytes(b"not a key")
    with pytest.raises(ProvisionError, match=r"site-1.*cannot load private key"):
        provision(make_project(), out)
    (out / "site-1" / "cert.pem").unlink()  # an interrupted kit with a broken key
    with pytest.raises(ProvisionError, match="cannot load private key"):
        provision(make_project(), out)
    assert provision(make_project(), out, force=True).names("reissued") == ("site-1",)
    assert _mode(out / "site-1" / "key.pem") == 0o600


def test_output_path_that_is_a_file_is_a_provision_error(make_project, tmp_path):
    (tmp_path / "out").write_text("")
    with pytest.raises(ProvisionError, match="cannot write the startup kits"):
        provision(make_project(), tmp_path / "out")


def test_interrupted_kit_is_completed_with_its_existing_key(make_project, tmp_path):
    out = tmp_path / "out"
    provision(make_project(), out)
    key = (out / "site-2" / "key.pem").read_bytes()
    (out / "site-2" / "cert.pem").unlink()
    (out / "site-2" / "connection.json").unlink()
    result = provision(make_project(), out)
    assert result.names("created") == ("site-2",)
    assert (out / "site-2" / "key.pem").read_bytes() == key
    cert = load_cert_file(out / "site-2" / "cert.pem")
    assert same_public_key(cert, load_key(out / "site-2" / "key.pem"))


def test_keys_are_born_0600_whatever_the_umask(make_project, tmp_path, monkeypatch):
    opened: list[tuple[str, int, int]] = []
    real_open = os.open

    def spy(path, flags, mode=0o777, *a, **kw):
        opened.append((os.fspath(path), flags, mode))
        return real_open(path, flags, mode, *a, **kw)

    monkeypatch.setattr(certs_mod.os, "open", spy)
    old = os.umask(0)
    try:
        provision(make_project(), tmp_path / "out")
    finally:
        os.umask(old)
    key_opens = [(f, m) for p, f, m in opened if ".key" in p and p.endswith(".tmp")]
    assert len(key_opens) == len(NAMES) + 1  # every kit key plus the CA key
    assert all(m == 0o600 and f & os.O_EXCL for f, m in key_opens)
    for p in (tmp_path / "out").rglob("*"):
        if p.name in ("key.pem", "ca.key"):
            assert _mode(p) == 0o600


def test_provision_main_prints_what_it_did(make_project, tmp_path, capsys):
    assert provision_main([str(make_project()), "-o", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "CA created" in out and "created" in out and "site-2" in out
    assert provision_main([str(make_project()), "-o", str(tmp_path / "out")]) == 0
    assert "CA kept" in capsys.readouterr().out


def test_provision_main_reports_errors(tmp_path, capsys):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "p"\n')
    assert provision_main([str(bad), "-o", str(tmp_path / "out")]) == 2
    assert "error:" in capsys.readouterr().err and not (tmp_path / "out").exists()
    with pytest.raises(SystemExit) as info:
        provision_main(["--help"])
    assert info.value.code == 0
    assert "startup kit" in capsys.readouterr().out


def test_loading_a_non_kit_says_why(tmp_path, kits):
    with pytest.raises(ProvisionError, match="is not a startup kit"):
        StartupKit.load(tmp_path)
    (tmp_path / "connection.json").write_text('{"format": 1}')
    with pytest.raises(ProvisionError, match="malformed"):
        StartupKit.load(tmp_path)
    (tmp_path / "connection.json").write_bytes((kits / "site-1" / "connection.json").read_bytes())
    with pytest.raises(ProvisionError, match=r"incomplete: cert\.pem missing"):
        StartupKit.load(tmp_path)
