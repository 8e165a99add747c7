"""Identity fields written into certificates and read back strictly."""

from __future__ import annotations

import datetime as dt

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import NameOID
from hypothesis import given, settings
from hypothesis import strategies as st

from cellnet.errors import AuthError
from cellnet.security import Identity, Kind, Role, identity_from_cert
from cellnet.security.certs import issue_cert, make_ca, new_key
from cellnet.security.identity import decode_kind, encode_kind, load_certificate
from cellnet.security.names import fqcn_problem, site_part

CA_KEY, CA_CERT = make_ca("demo")

cell_names = st.from_regex(r"[A-Za-z0-9_]([A-Za-z0-9_]|-(?=[A-Za-z0-9_])){0,40}", fullmatch=True)
orgs = st.text(
    st.characters(codec="utf-8", categories=("L", "N", "Zs", "P")), min_size=1, max_size=64
).map(str.strip).filter(lambda s: 1 <= len(s) <= 64 and s.isprintable())


def _issue(identity: Identity) -> x509.Certificate:
    return issue_cert(CA_KEY, CA_CERT, identity, new_key().public_key())


@settings(max_examples=40, deadline=None)
@given(name=cell_names, org=orgs, kind=st.sampled_from([Kind.SERVER, Kind.SITE]))
def test_cell_identities_round_trip(name, org, kind):
    identity = Identity(name, org, None, kind)
    assert identity_from_cert(_issue(identity)) == identity


@settings(max_examples=20, deadline=None)
@given(user=cell_names, org=orgs, role=st.sampled_from(list(Role)))
def test_admin_identities_round_trip(user, org, role):
    identity = Identity(f"{user}@example.org", org, role, Kind.ADMIN)
    cert = _issue(identity)
    assert identity_from_cert(cert) == identity
    der = cert.public_bytes(serialization.Encoding.DER)
    pem = cert.public_bytes(serialization.Encoding.PEM)
    assert identity_from_cert(der) == identity_from_cert(pem.decode()) == identity


def test_kind_extension_encoding():
    for kind in Kind:
        assert decode_kind(encode_kind(kind)) is kind
    bad_values = (
        b"", b"\x0c", b"\x0c\x05site", b"\x13\x04site", b"\x0c\x04ship", b"\x0c\x02\xff\xfe"
    )
    for bad in bad_values:
        with pytest.raises(AuthError):
            decode_kind(bad)


def _foreign_cert(subject: list[x509.NameAttribute], ext: bytes | None) -> x509.Certificate:
    """A cert signed by our CA but shaped by hand, to test the strict reader."""
    key = new_key()
    now = dt.datetime.now(dt.UTC)
    b = (
        x509.CertificateBuilder().subject_name(x509.Name(subject)).issuer_name(CA_CERT.subject)
        .public_key(key.public_key()).serial_number(1)
        .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
    )
    if ext is not None:
        from cellnet.security.identity import KIND_OID

        b = b.add_extension(x509.UnrecognizedExtension(KIND_OID, ext), critical=False)
    return b.sign(CA_KEY, hashes.SHA256())


CN, ORG, OU = NameOID.COMMON_NAME, NameOID.ORGANIZATION_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME


@pytest.mark.parametrize(
    ("subject", "ext", "fragment"),
    [
        ([(CN, "site-1"), (ORG, "a")], None, "no cellnet kind extension"),
        ([(CN, "site-1")], encode_kind(Kind.SITE), "lacks a CN or an O"),
        ([(CN, "site-1"), (CN, "site-2"), (ORG, "a")], encode_kind(Kind.SITE), "2 CN attributes"),
        ([(CN, "site 1"), (ORG, "a")], encode_kind(Kind.SITE), "invalid site"),
        ([(CN, "site-1"), (ORG, "a"), (OU, "lead")], encode_kind(Kind.SITE),
         "must not carry a role"),
        ([(CN, "x@y.org"), (ORG, "a")], encode_kind(Kind.ADMIN), "no valid role"),
        ([(CN, "x@y.org"), (ORG, "a"), (OU, "king")], encode_kind(Kind.ADMIN), "no valid role"),
        ([(CN, "site-1"), (ORG, "a")], encode_kind(Kind.ADMIN), "invalid admin"),
    ],
)
def test_malformed_identities_are_refused(subject, ext, fragment):
    cert = _foreign_cert([x509.NameAttribute(oid, v) for oid, v in subject], ext)
    with pytest.raises(AuthError, match=fragment):
        identity_from_cert(cert)


def test_load_certificate_rejects_garbage():
    with pytest.raises(AuthError, match="not a parseable"):
        load_certificate(b"\x30\x03\x02\x01\x01")
    with pytest.raises(AuthError, match="not a parseable"):
        load_certificate("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n")
    with pytest.raises(TypeError):
        load_certificate(42)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("fqcn", "site"),
    [("server", "server"), ("server.j1", "server"), ("site-1.j1.a", "site-1"),
     ("site-1--agent", "site-1"), ("s", "s")],
)
def test_site_part(fqcn, site):
    assert fqcn_problem(fqcn) is None
    assert site_part(fqcn) == site


@pytest.mark.parametrize("bad", ["", ".", "a.", ".a", "a..b", "a b", "a/b", "x" * 65, 3])
def test_invalid_fqcns_are_named(bad):
    assert fqcn_problem(bad) is not None
