"""Real TLS 1.3 mutual-auth handshakes between kits, and typed errors for each failure."""

from __future__ import annotations

import datetime as dt
import socket
import ssl
import threading

import pytest

from cellnet.errors import (
    AuthError,
    CertificateExpiredError,
    CertificateNotYetValidError,
    IdentityMismatchError,
    MissingCertificateError,
    ProvisionError,
    UnknownCAError,
)
from cellnet.security import (
    Identity,
    Kind,
    Role,
    StartupKit,
    classify_ssl_error,
    client_context,
    provision,
    server_context,
    verify_peer,
)


def _ctxs(kits, client="site-1", server="server"):
    return client_context(kits / client), server_context(kits / server)


def test_contexts_are_tls13_mutual_and_project_ca_only(kits):
    cctx, sctx = _ctxs(kits)
    for ctx in (cctx, sctx):
        assert ctx.minimum_version == ctx.maximum_version == ssl.TLSVersion.TLSv1_3
        assert ctx.verify_mode == ssl.CERT_REQUIRED
        assert ctx.verify_flags & ssl.VERIFY_X509_STRICT
        assert [c["subject"] for c in ctx.get_ca_certs()] == [
            ((("commonName", "demo"),), (("organizationName", "demo"),))
        ]
    assert cctx.check_hostname and not sctx.check_hostname
    assert not client_context(kits / "site-1", check_hostname=False).check_hostname


@pytest.mark.parametrize("client", ["site-1", "site-2", "admin@org-a.com"])
def test_kits_of_one_project_handshake_and_bind_identities(kits, handshake, client):
    cctx, sctx = _ctxs(kits, client)
    pair = handshake(cctx, sctx, "localhost")
    assert pair.errors == {}
    assert pair.client.version() == pair.server.version() == "TLSv1.3"
    assert pair.received == {"client": b"hello from server", "server": b"hello from client"}
    kit = StartupKit.load(kits / client)
    announced = client if kit.kind is Kind.ADMIN else f"{client}.job-7"
    assert verify_peer(pair.server, announced) == kit.identity
    assert verify_peer(pair.client, "server", Kind.SERVER) == Identity(
        "server", "demo", None, Kind.SERVER
    )


def test_handshake_over_real_loopback_sockets(kits):
    cctx, sctx = _ctxs(kits, "admin@org-a.com")
    a, b = socket.socketpair()
    seen: dict[str, object] = {}

    def serve():
        with sctx.wrap_socket(b, server_side=True) as s:
            seen["identity"] = verify_peer(s, "admin@org-a.com", "admin")
            s.sendall(s.recv(100).upper())

    t = threading.Thread(target=serve)
    t.start()
    with cctx.wrap_socket(a, server_hostname="localhost") as c:
        c.sendall(b"ping")
        assert c.recv(100) == b"PING"
        assert verify_peer(c).kind is Kind.SERVER
    t.join(5)
    assert seen["identity"] == Identity(
        "admin@org-a.com", "org-a", Role.PROJECT_ADMIN, Kind.ADMIN
    )


def test_expired_server_cert_is_rejected_as_expired(kits, handshake, expired_kit):
    pair = handshake(client_context(kits / "site-1"), server_context(expired_kit("server")),
                     "localhost")
    err = classify_ssl_error(pair.errors["client"])
    assert type(err) is CertificateExpiredError and err.verify_code == 10 and not err.by_peer
    assert "expired" in str(err)


def test_expired_client_cert_is_rejected_as_expired_on_both_sides(kits, handshake, expired_kit):
    pair = handshake(client_context(expired_kit("site-2")), server_context(kits / "server"),
                     "localhost")
    server_err = classify_ssl_error(pair.errors["server"])
    assert type(server_err) is CertificateExpiredError and server_err.verify_code == 10
    client_err = classify_ssl_error(pair.errors["client"])
    assert type(client_err) is CertificateExpiredError and client_err.by_peer
    assert "our certificate is expired" in str(client_err)


@pytest.mark.parametrize("same_name", [True, False])
def test_server_of_another_project_is_unknown_ca(
    kits, other_kits, handshake, make_project, tmp_path, same_name
):
    if not same_name:
        provision(make_project(name="elsewhere"), tmp_path / "elsewhere")
    foreign = other_kits if same_name else tmp_path / "elsewhere"
    pair = handshake(client_context(kits / "site-1"), server_context(foreign / "server"),
                     "localhost")
    err = classify_ssl_error(pair.errors["client"])
    assert type(err) is UnknownCAError and err.verify_code in (2, 7, 19, 20, 21)


def test_client_of_another_project_is_unknown_ca(kits, other_kits, handshake):
    # The foreign client trusts our server, so it is the server that refuses it.
    cctx = client_context(other_kits / "site-1")
    cctx.load_verify_locations(cafile=str(kits / "ca" / "ca.pem"))
    pair = handshake(cctx, server_context(kits / "server"), "localhost")
    assert type(classify_ssl_error(pair.errors["server"])) is UnknownCAError
    client_err = classify_ssl_error(pair.errors["client"])
    assert type(client_err) is UnknownCAError and client_err.by_peer


def test_client_without_certificate_is_refused(kits, handshake):
    bare = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    bare.minimum_version = ssl.TLSVersion.TLSv1_3
    bare.load_verify_locations(cafile=str(kits / "site-1" / "ca.pem"))
    pair = handshake(bare, server_context(kits / "server"), "localhost")
    assert type(classify_ssl_error(pair.errors["server"])) is MissingCertificateError
    client_err = classify_ssl_error(pair.errors["client"])
    assert type(client_err) is MissingCertificateError and client_err.by_peer


def test_wrong_server_host_is_an_identity_mismatch(kits, handshake):
    pair = handshake(*_ctxs(kits), "fl.example.org")
    err = classify_ssl_error(pair.errors["client"])
    assert type(err) is IdentityMismatchError and err.verify_code == 62


def test_tls12_only_peer_is_refused(kits, handshake):
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    old.load_verify_locations(cafile=str(kits / "site-1" / "ca.pem"))
    old.load_cert_chain(kits / "site-1" / "cert.pem", kits / "site-1" / "key.pem")
    pair = handshake(old, server_context(kits / "server"), "localhost")
    err = classify_ssl_error(pair.errors["server"])
    assert type(err) is AuthError and "handshake failed" in str(err)


@pytest.mark.parametrize(
    ("client", "announced", "kind", "fragment"),
    [
        ("site-2", "site-1", None, "announced 'site-1' (site 'site-1') but its certificate is for "
         "'site-2'"),
        ("site-2", "site-1.job-7", None, "certificate is for 'site-2'"),
        ("site-2", "site-22", None, "certificate is for 'site-2'"),
        ("site-2", "site-2..x", None, "invalid cell name"),
        ("site-2", "site-2", "admin", "is a site, expected a admin"),
        ("admin@org-a.com", "boss@org-a.com", None, "certificate is for admin"),
        ("admin@org-a.com", "admin@org-a.com.x", None, "certificate is for admin"),
    ],
)
def test_verify_peer_detects_name_and_kind_mismatch(
    kits, handshake, client, announced, kind, fragment
):
    pair = handshake(*_ctxs(kits, client), "localhost")
    assert pair.errors == {}
    with pytest.raises(IdentityMismatchError) as info:
        verify_peer(pair.server, announced, kind)
    assert fragment in str(info.value)


def test_verify_peer_accepts_agent_and_job_cells_of_the_site(kits, handshake):
    pair = handshake(*_ctxs(kits), "localhost")
    for fqcn in ("site-1", "site-1.job-7", "site-1--agent-3", "site-1.job-7.agent-3"):
        assert verify_peer(pair.server, fqcn, "site").name == "site-1"


def test_verify_peer_on_bare_certificates(kits, other_kits, expired_kit):
    der = (kits / "site-1" / "cert.pem").read_bytes()
    ca = kits / "ca" / "ca.pem"
    assert verify_peer(der, "site-1", ca=ca).org == "org-a"
    assert verify_peer(der, ca=StartupKit.load(kits / "server")).kind is Kind.SITE
    with pytest.raises(TypeError, match="needs ca="):
        verify_peer(der)
    with pytest.raises(UnknownCAError):
        verify_peer(der, ca=other_kits / "ca" / "ca.pem")
    with pytest.raises(CertificateExpiredError):
        verify_peer(expired_kit("site-1").cert_path.read_bytes(), ca=ca)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(days=1)
    with pytest.raises(CertificateNotYetValidError):
        verify_peer(der, ca=ca, now=past)


def test_admin_kit_cannot_listen_and_bad_input_is_typed(kits, tmp_path):
    with pytest.raises(ProvisionError, match="can only connect"):
        server_context(kits / "admin@org-a.com")
    with pytest.raises(ProvisionError, match="not a startup kit"):
        client_context(tmp_path)
    with pytest.raises(TypeError):
        classify_ssl_error(ValueError("x"))  # type: ignore[arg-type]


def test_classify_covers_not_yet_valid_and_unknown_codes():
    def verify_error(code: int) -> ssl.SSLCertVerificationError:
        exc = ssl.SSLCertVerificationError(1, "certificate verify failed")
        exc.verify_code, exc.verify_message = code, f"code {code}"
        return exc

    assert type(classify_ssl_error(verify_error(9))) is CertificateNotYetValidError
    assert type(classify_ssl_error(verify_error(19))) is UnknownCAError
    generic = classify_ssl_error(verify_error(26))
    assert type(generic) is AuthError and generic.verify_code == 26
