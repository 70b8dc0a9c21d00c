"""`gtnb certs`: the private CA and the example.local server certificate HAProxy presents.

The seed's clients trust `haproxy/certs/ca.pem` and reach https://example.local through HAProxy.
We make both files with `cryptography`:

- `ca.pem`: a self-signed CA certificate (what clients verify against; no secret inside);
- `example.local.pem`: the server certificate, the CA certificate and the private key in one file,
  as HAProxy's `crt` keyword wants it; mode 0600 because it holds the key.

The CA's private key is never written: nothing else is ever signed with it, and `--force` makes a
fresh pair. Both land in `haproxy/certs/` (git-ignored) unless told otherwise.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from .errors import ConfigError

__all__ = [
    "CA_FILE",
    "SERVER_FILE",
    "SERVER_NAME",
    "default_certs_dir",
    "make_certs",
    "ensure_certs",
]

log = logging.getLogger(__name__)

SERVER_NAME = "example.local"
CA_FILE = "ca.pem"
SERVER_FILE = f"{SERVER_NAME}.pem"

# Long enough that a lab made once keeps working for the life of a checkout; short enough that
# a leaked key goes stale. The server cert stays under 398 days so strict clients accept it too.
_CA_DAYS = 3650
_SERVER_DAYS = 397
# Any PEM private key block (PKCS#8 or the traditional EC/RSA forms).
_KEY_BLOCK = re.compile(rb"-----BEGIN ([A-Z ]*)PRIVATE KEY-----.+?-----END \1PRIVATE KEY-----", re.S)
# A certificate that expires within this window is replaced by ensure_certs().
_RENEW_BEFORE = dt.timedelta(days=1)


def default_certs_dir() -> Path:
    """Return `haproxy/certs/` of the repository this package lives in."""
    return Path(__file__).resolve().parent.parent / "haproxy" / "certs"


def _resolve_dir(dir: str | Path | None) -> Path:
    path = Path(dir) if dir is not None else default_certs_dir()
    if path.exists() and not path.is_dir():
        raise ConfigError(f"certificate directory {path} is a file: pass a directory (or none for haproxy/certs/)")
    return path


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _build(now: dt.datetime) -> tuple[bytes, bytes]:
    """Return (ca.pem bytes, example.local.pem bytes)."""
    # P-256: fast to generate and to handshake on two shared cores, accepted everywhere.
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "gtnb lab"),
            x509.NameAttribute(NameOID.COMMON_NAME, "gtnb private CA"),
        ]
    )
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))  # tolerate small clock skew
        .not_valid_after(now + dt.timedelta(days=_CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, SERVER_NAME)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=_SERVER_DAYS))
        # Clients match the SAN, never the CN: this is what makes `--resolve example.local:...` work.
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(SERVER_NAME)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        # Strict verifiers (Python 3.13's VERIFY_X509_STRICT) require the AKI.
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    ca_pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    server_pem = (
        cert.public_bytes(serialization.Encoding.PEM)
        + ca_pem  # the chain, so clients that only know the CA still build the path
        + key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return ca_pem, server_pem


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write atomically with `mode` from the start: the key is never world-readable, not even briefly."""
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)  # O_CREAT's mode is filtered by the umask
    os.replace(tmp, path)


def make_certs(dir: str | Path | None = None, force: bool = False) -> list[Path]:
    """Write `ca.pem` and `example.local.pem` into `dir`.

    Parameters:
        dir: target directory (default `haproxy/certs/` of the repository); created if missing.
        force: replace existing files. Without it, an existing complete pair is kept as it is.

    Returns:
        The two paths, CA first.
    """
    path = _resolve_dir(dir)
    ca_path, pem_path = path / CA_FILE, path / SERVER_FILE
    if not force and ca_path.is_file() and pem_path.is_file():
        log.info("certificates already in %s; kept (pass force=True / --force to replace them)", path)
        return [ca_path, pem_path]
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create certificate directory {path}: {exc.strerror}; pick a writable dir") from exc
    ca_pem, server_pem = _build(_now())
    # The server file first: a half-written pair then lacks ca.pem and is redone next time.
    _write(pem_path, server_pem, 0o600)
    _write(ca_path, ca_pem, 0o644)
    log.info("wrote private CA %s and %s certificate %s", ca_path, SERVER_NAME, pem_path)
    return [ca_path, pem_path]


def _still_good(ca_path: Path, pem_path: Path) -> bool:
    """True when both files parse, the server cert was issued by this CA and is not about to expire."""
    try:
        ca = x509.load_pem_x509_certificate(ca_path.read_bytes())
        data = pem_path.read_bytes()
        server = x509.load_pem_x509_certificate(data)  # the first PEM block
        block = _KEY_BLOCK.search(data)
        if block is None:
            return False
        key = serialization.load_pem_private_key(block.group(0), password=None)
    except (OSError, ValueError, TypeError):
        return False
    # HAProxy refuses a crt file whose key does not match its certificate.
    if server.issuer != ca.subject or key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    ) != server.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo):
        return False
    horizon = _now() + _RENEW_BEFORE
    return server.not_valid_after_utc > horizon and ca.not_valid_after_utc > horizon


def ensure_certs(dir: str | Path | None = None) -> tuple[Path, Path]:
    """Make sure a usable CA and server certificate exist, creating them when missing or stale.

    Parameters:
        dir: the certificate directory (default `haproxy/certs/`).

    Returns:
        (path of ca.pem, path of example.local.pem).
    """
    path = _resolve_dir(dir)
    ca_path, pem_path = path / CA_FILE, path / SERVER_FILE
    if ca_path.is_file() and pem_path.is_file() and _still_good(ca_path, pem_path):
        return ca_path, pem_path
    if ca_path.exists() or pem_path.exists():
        log.info("certificates in %s are incomplete, unreadable or about to expire; making new ones", path)
    made = make_certs(path, force=True)
    return made[0], made[1]
