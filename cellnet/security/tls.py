"""TLS 1.3 mutual-auth contexts from a startup kit, and binding a peer's identity to its cert.

Theory of operation: OpenSSL does the chain and validity checks during the
handshake (both sides require a certificate from the project CA and nothing
else). When it refuses, Python raises ``ssl.SSLError``; on the side that did
the check it is an ``SSLCertVerificationError`` with OpenSSL's verify code,
on the other side an alert whose reason names the problem.
:func:`classify_ssl_error` turns either into the matching
:class:`~cellnet.errors.AuthError` subclass. After the handshake the peer
announces its cell name; :func:`verify_peer` re-checks the certificate
against the context's CA, reads the identity it carries and checks the
announced name against it, so a site can never speak for another one.
"""

from __future__ import annotations

import datetime as dt
import os
import ssl
from collections.abc import Iterable
from pathlib import Path

from cryptography import x509

from cellnet.errors import (
    AuthError,
    CertificateExpiredError,
    CertificateNotYetValidError,
    IdentityMismatchError,
    MissingCertificateError,
    ProvisionError,
    UnknownCAError,
)
from cellnet.security.certs import issued_by
from cellnet.security.identity import identity_from_cert, load_certificate
from cellnet.security.kit import StartupKit
from cellnet.security.names import Identity, Kind, admin_cell_name, fqcn_problem, site_part

KitLike = StartupKit | str | os.PathLike[str]

# OpenSSL X509_V_ERR_* codes -> which problem they are.
_BY_VERIFY_CODE: dict[int, type[AuthError]] = {
    2: UnknownCAError,  # unable to get issuer certificate
    4: UnknownCAError,  # unable to decrypt certificate signature
    7: UnknownCAError,  # certificate signature failure (same name, other CA key)
    9: CertificateNotYetValidError,
    10: CertificateExpiredError,
    18: UnknownCAError,  # self-signed leaf
    19: UnknownCAError,  # self-signed certificate in chain
    20: UnknownCAError,  # unable to get local issuer certificate
    21: UnknownCAError,  # unable to verify the first certificate
    24: UnknownCAError,  # invalid CA certificate
    62: IdentityMismatchError,  # hostname mismatch
    64: IdentityMismatchError,  # IP address mismatch
}

# Alert reasons seen by the side whose certificate the peer refused.
_BY_ALERT: dict[str, tuple[type[AuthError], str]] = {
    "SSLV3_ALERT_CERTIFICATE_EXPIRED": (CertificateExpiredError, "our certificate is expired"),
    "TLSV1_ALERT_UNKNOWN_CA": (UnknownCAError, "our certificate is from a CA it does not trust"),
    "TLSV13_ALERT_CERTIFICATE_REQUIRED": (MissingCertificateError, "we sent no certificate"),
    "SSLV3_ALERT_BAD_CERTIFICATE": (AuthError, "our certificate is bad"),
    "SSLV3_ALERT_CERTIFICATE_UNKNOWN": (AuthError, "our certificate is unacceptable"),
    "SSLV3_ALERT_UNSUPPORTED_CERTIFICATE": (AuthError, "our certificate type is unsupported"),
    "TLSV1_ALERT_DECRYPT_ERROR": (AuthError, "our certificate signature did not verify"),
}

_NO_PEER_CERT = {"PEER_DID_NOT_RETURN_A_CERTIFICATE", "NO_CERTIFICATES_RETURNED"}


def _load_kit(kit: KitLike) -> StartupKit:
    return kit if isinstance(kit, StartupKit) else StartupKit.load(kit)


def _configure(ctx: ssl.SSLContext, kit: StartupKit) -> ssl.SSLContext:
    """TLS 1.3 only, the project CA only, our cert and key, strict X.509 checks."""
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    try:
        ctx.load_verify_locations(cafile=os.fspath(kit.ca_path))
        ctx.load_cert_chain(os.fspath(kit.cert_path), os.fspath(kit.key_path))
    except (OSError, ssl.SSLError) as exc:
        raise ProvisionError(f"startup kit {kit.path} cannot be loaded into TLS: {exc}") from exc
    return ctx


def server_context(kit: KitLike) -> ssl.SSLContext:
    """A listening-side context: requires every client to present a project-CA certificate."""
    kit = _load_kit(kit)
    if kit.kind is Kind.ADMIN:
        raise ProvisionError(f"admin kit {kit.name!r} can only connect, not listen")
    ctx = _configure(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), kit)
    ctx.num_tickets = 0  # no resumption: every link authenticates in full
    return ctx


def client_context(kit: KitLike, *, check_hostname: bool = True) -> ssl.SSLContext:
    """A connecting-side context; wrap with ``server_hostname=kit.server_hostname``.

    ``check_hostname=False`` is for direct links to peers that are not the
    server (no host in their certificate): identity is then bound by
    :func:`verify_peer` alone.
    """
    ctx = _configure(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT), _load_kit(kit))
    ctx.check_hostname = check_hostname
    return ctx


def _trusted(ca: object) -> list[x509.Certificate]:
    if isinstance(ca, StartupKit):
        return [load_certificate(ca.ca_path.read_bytes())]
    if isinstance(ca, os.PathLike):
        return [load_certificate(Path(ca).read_bytes())]
    if isinstance(ca, x509.Certificate | bytes | str):
        return [load_certificate(ca)]
    if isinstance(ca, Iterable):
        return [c for item in ca for c in _trusted(item)]
    raise TypeError(f"ca must be a certificate, PEM/DER, a StartupKit or a list, not {ca!r}")


def _peer_cert(peer: object, ca: object) -> tuple[x509.Certificate, list[x509.Certificate]]:
    """The peer's certificate and the CA certs to check it against."""
    if isinstance(peer, ssl.SSLSocket | ssl.SSLObject):
        der = peer.getpeercert(binary_form=True)
        if der is None:
            raise MissingCertificateError("the peer presented no certificate")
        trusted = peer.context.get_ca_certs(binary_form=True) if ca is None else ca
        return load_certificate(der), _trusted(trusted)
    if ca is None:
        raise TypeError("verify_peer needs ca= to check a bare certificate")
    return load_certificate(peer), _trusted(ca)


def verify_peer(
    peer: ssl.SSLSocket | ssl.SSLObject | x509.Certificate | bytes,
    expected_name: str | None = None,
    expected_kind: Kind | str | None = None,
    *,
    ca: object = None,
    now: dt.datetime | None = None,
) -> Identity:
    """Check ``peer``'s certificate and return the identity it proves.

    ``peer`` is a connected SSL socket/object (checked against its context's
    CA certs) or a bare certificate (DER/PEM/parsed; then ``ca`` is required).
    ``expected_name`` is the name the peer announced: an FQCN whose site part
    must equal the CN, or for an admin the exact admin identity.
    """
    cert, trusted = _peer_cert(peer, ca)
    if not any(issued_by(cert, c) for c in trusted):
        raise UnknownCAError(f"certificate of {cert.subject.rfc4514_string()} is not from our CA")
    now = now or dt.datetime.now(dt.UTC)
    if now > cert.not_valid_after_utc:
        raise CertificateExpiredError(f"certificate expired at {cert.not_valid_after_utc}")
    if now < cert.not_valid_before_utc:
        raise CertificateNotYetValidError(f"certificate valid from {cert.not_valid_before_utc}")
    identity = identity_from_cert(cert)
    if expected_kind is not None and identity.kind != Kind(expected_kind):
        raise IdentityMismatchError(
            f"peer {identity.name!r} is a {identity.kind}, expected a {Kind(expected_kind)}"
        )
    if expected_name is not None:
        _check_name(identity, expected_name)
    return identity


def _check_name(identity: Identity, announced: str) -> None:
    if identity.kind is Kind.ADMIN:
        # its identity, or a cell of its own: admin_cell_name(identity) [+ "--<session>"]
        cell = fqcn_problem(announced) is None and "." not in announced
        if announced != identity.name and not (
            cell and site_part(announced) == admin_cell_name(identity.name)
        ):
            raise IdentityMismatchError(
                f"peer announced {announced!r} but its certificate is for admin {identity.name!r}"
            )
        return
    problem = fqcn_problem(announced)
    if problem is not None:
        raise IdentityMismatchError(f"peer announced an invalid cell name: {problem}")
    if site_part(announced) != identity.name:
        raise IdentityMismatchError(
            f"peer announced {announced!r} (site {site_part(announced)!r}) "
            f"but its certificate is for {identity.name!r}"
        )


def classify_ssl_error(exc: ssl.SSLError) -> AuthError:
    """The typed authentication error that an ``ssl`` handshake failure stands for."""
    if not isinstance(exc, ssl.SSLError):
        raise TypeError(f"expected an ssl.SSLError, not {type(exc).__name__}")
    if isinstance(exc, ssl.SSLCertVerificationError):
        code = exc.verify_code
        cls = _BY_VERIFY_CODE.get(code, AuthError)
        return cls(
            f"peer certificate rejected: {exc.verify_message} (verify code {code})",
            verify_code=code,
        )
    reason = exc.reason or ""
    if reason in _BY_ALERT:
        cls, what = _BY_ALERT[reason]
        return cls(f"the peer rejected us: {what} ({reason})", by_peer=True)
    if reason in _NO_PEER_CERT:
        return MissingCertificateError(f"the peer presented no certificate ({reason})")
    return AuthError(f"TLS handshake failed: {exc}")
