"""Keys and certificates: the project CA, participant certs, PEM files written safely.

Keys are ECDSA P-256: OpenSSL (and so Python's ``ssl``) negotiates them in
TLS 1.3 mutual auth everywhere, and generating one takes well under a
millisecond. Certificates follow what OpenSSL's strict X.509 mode expects
(critical basic constraints, key usage, SKI/AKI) so contexts can run with
``VERIFY_X509_STRICT``.

Private keys are written through :func:`write_private`: the temporary file is
created with mode 0600 by ``os.open`` (never readable by others, not even for
an instant), fsynced, then linked into place so a crash never leaves a
half-written key under the final name.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import secrets
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from cellnet.errors import ProvisionError
from cellnet.security.identity import kind_extension, subject_for
from cellnet.security.names import Identity, Kind

CA_DAYS = 3650
CERT_DAYS = 825
_BACKDATE = dt.timedelta(minutes=5)  # tolerate small clock skew between hosts

PrivateKey = ec.EllipticCurvePrivateKey


def new_key() -> PrivateKey:
    """A fresh ECDSA P-256 private key."""
    return ec.generate_private_key(ec.SECP256R1())


def key_pem(key: PrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM (protected by file mode, not a passphrase)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def load_key(path: Path) -> PrivateKey:
    """Read a P-256 private key written by :func:`key_pem`."""
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise ProvisionError(f"cannot load private key {path}: {exc}") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ProvisionError(f"{path}: expected an EC private key, got {type(key).__name__}")
    return key


def load_cert_file(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except (OSError, ValueError) as exc:
        raise ProvisionError(f"cannot load certificate {path}: {exc}") from exc


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def make_ca(project_name: str, *, now: dt.datetime | None = None, days: int = CA_DAYS):
    """A self-signed root CA for one project: ``(key, cert)``; CN is the project name."""
    now = now or _now()
    key = new_key()
    name = x509.Name([
        x509.NameAttribute(NameOID.COMMON_NAME, project_name),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, project_name),
    ])
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True,
                crl_sign=True, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), False)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def server_sans(host: str) -> list[x509.GeneralName]:
    """SAN entries for the server's host (an IP, or a DNS name; localhost adds loopback IPs)."""
    try:
        return [x509.IPAddress(ipaddress.ip_address(host))]
    except ValueError:
        pass
    sans: list[x509.GeneralName] = [x509.DNSName(host)]
    if host == "localhost":
        sans += [x509.IPAddress(ipaddress.ip_address(a)) for a in ("127.0.0.1", "::1")]
    return sans


def issue_cert(
    ca_key: PrivateKey,
    ca_cert: x509.Certificate,
    identity: Identity,
    public_key: ec.EllipticCurvePublicKey,
    *,
    host: str | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    days: int = CERT_DAYS,
) -> x509.Certificate:
    """Sign a participant certificate; ``host`` adds the server's SAN.

    Servers and sites get both TLS usages (sites may listen for direct peer
    links); admins only connect, so they get client auth alone.
    """
    now = _now()
    not_before = not_before or (now - _BACKDATE)
    not_after = not_after or (now + dt.timedelta(days=days))
    usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
    if identity.kind is not Kind.ADMIN:
        usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject_for(identity))
        .issuer_name(ca_cert.subject)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=False,
                crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .add_extension(kind_extension(identity.kind), critical=False)
    )
    if host is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(server_sans(host)), critical=False
        )
    return builder.sign(ca_key, hashes.SHA256())


def issued_by(cert: x509.Certificate, ca_cert: x509.Certificate) -> bool:
    """True when ``ca_cert`` signed ``cert`` (issuer name and signature both match)."""
    try:
        cert.verify_directly_issued_by(ca_cert)
    except Exception:  # InvalidSignature, ValueError (name), TypeError (key type)
        return False
    return True


def same_public_key(cert: x509.Certificate, key: PrivateKey) -> bool:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return cert.public_key().public_bytes(*fmt) == key.public_key().public_bytes(*fmt)


def _write(path: Path, data: bytes, mode: int, *, overwrite: bool) -> None:
    """Write ``data`` to a temp file born with ``mode``, fsync, then move it into place."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.tmp")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(tmp, flags, mode)
    try:
        os.fchmod(fd, mode)  # the umask may only have narrowed it; make it exact
        with os.fdopen(fd, "wb", closefd=False) as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
    finally:
        os.close(fd)
    try:
        if overwrite:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)  # fails if path exists: never clobber by accident
    finally:
        if tmp.exists():
            tmp.unlink()
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_private(path: Path, data: bytes, *, overwrite: bool = False) -> None:
    """Write a secret (mode 0600 from creation on)."""
    _write(path, data, 0o600, overwrite=overwrite)


def write_public(path: Path, data: bytes, *, overwrite: bool = False) -> None:
    """Write a certificate or config file (mode 0644)."""
    _write(path, data, 0o644, overwrite=overwrite)


def make_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) with the final directory owner-only (0700)."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)
