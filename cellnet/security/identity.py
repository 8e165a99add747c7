"""Identity in a certificate: CN = name, O = org, OU = admin role, kind in a private extension.

The kind (server/site/admin) lives in a non-critical extension under a private
OID from the UUID arc (``2.25.<uuid>``, usable without registration), encoded
as a DER UTF8String. Reading is strict: a certificate whose fields do not
form a valid identity is refused with :class:`~cellnet.errors.AuthError`.
"""

from __future__ import annotations

from cryptography import x509
from cryptography.x509.oid import NameOID, ObjectIdentifier

from cellnet.errors import AuthError
from cellnet.security.names import Identity, Kind, Role, name_problem, org_problem

#: Private OID of the cellnet "participant kind" extension.
KIND_OID = ObjectIdentifier("2.25.817657798705885094014757935148040124")

_UTF8STRING = 0x0C


def encode_kind(kind: Kind) -> bytes:
    """DER UTF8String holding the kind (short strings only: one length byte)."""
    raw = kind.value.encode()
    return bytes((_UTF8STRING, len(raw))) + raw


def decode_kind(value: bytes) -> Kind:
    """Inverse of :func:`encode_kind`; anything else is an :class:`AuthError`."""
    if len(value) < 2 or value[0] != _UTF8STRING or value[1] != len(value) - 2:
        raise AuthError("certificate kind extension is not a short DER UTF8String")
    try:
        return Kind(value[2:].decode())
    except (UnicodeDecodeError, ValueError):
        raise AuthError(f"certificate kind {value[2:]!r} is not one of server/site/admin") from None


def subject_for(identity: Identity) -> x509.Name:
    """The subject name that encodes ``identity`` (OU only for admins)."""
    attrs = [
        x509.NameAttribute(NameOID.COMMON_NAME, identity.name),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, identity.org),
    ]
    if identity.role is not None:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, identity.role.value))
    return x509.Name(attrs)


def kind_extension(kind: Kind) -> x509.UnrecognizedExtension:
    """The extension value to add (non-critical) to a participant certificate."""
    return x509.UnrecognizedExtension(KIND_OID, encode_kind(kind))


def load_certificate(cert: x509.Certificate | bytes | str) -> x509.Certificate:
    """Accept a parsed certificate, DER bytes or PEM text/bytes."""
    if isinstance(cert, x509.Certificate):
        return cert
    if isinstance(cert, str):
        cert = cert.encode("ascii")
    if isinstance(cert, bytes | bytearray | memoryview):
        data = bytes(cert)
        try:
            if data.lstrip().startswith(b"-----BEGIN"):
                return x509.load_pem_x509_certificate(data)
            return x509.load_der_x509_certificate(data)
        except ValueError as exc:
            raise AuthError(f"not a parseable X.509 certificate: {exc}") from exc
    raise TypeError(f"expected a certificate, DER or PEM, not {type(cert).__name__}")


def _single(name: x509.Name, oid: ObjectIdentifier, label: str) -> str | None:
    values = name.get_attributes_for_oid(oid)
    if len(values) > 1:
        raise AuthError(f"certificate subject has {len(values)} {label} attributes")
    if not values:
        return None
    value = values[0].value
    if not isinstance(value, str):
        raise AuthError(f"certificate subject {label} is not text")
    return value


def identity_from_cert(cert: x509.Certificate | bytes | str) -> Identity:
    """Read back the identity a cellnet CA wrote into ``cert``; strict about every field."""
    cert = load_certificate(cert)
    try:
        ext = cert.extensions.get_extension_for_oid(KIND_OID)
    except x509.ExtensionNotFound:
        raise AuthError("certificate carries no cellnet kind extension") from None
    if not isinstance(ext.value, x509.UnrecognizedExtension):
        raise AuthError("certificate kind extension has an unexpected type")
    kind = decode_kind(ext.value.value)
    subject = cert.subject
    name = _single(subject, NameOID.COMMON_NAME, "CN")
    org = _single(subject, NameOID.ORGANIZATION_NAME, "O")
    role_text = _single(subject, NameOID.ORGANIZATIONAL_UNIT_NAME, "OU")
    if name is None or org is None:
        raise AuthError("certificate subject lacks a CN or an O")
    problem = name_problem(name, kind) or org_problem(org)
    if problem is not None:
        raise AuthError(f"certificate names an invalid {kind}: {problem}")
    role: Role | None = None
    if kind is Kind.ADMIN:
        try:
            role = Role(role_text)
        except ValueError:
            raise AuthError(f"admin certificate has no valid role (OU={role_text!r})") from None
    elif role_text is not None:
        raise AuthError(f"{kind} certificate must not carry a role (OU={role_text!r})")
    return Identity(name, org, role, kind)
