"""gtnb.certs: the private CA and example.local certificate, checked by real TLS handshakes."""

from __future__ import annotations

import socket
import ssl
import stat
import threading
from pathlib import Path

import pytest
from cryptography import x509

from gtnb.certs import ensure_certs, make_certs
from gtnb.errors import ConfigError


def _serve_once(pem: Path) -> tuple[socket.socket, threading.Thread, list[BaseException]]:
    """A one-shot TLS server on loopback presenting `pem`; returns (listener, thread, errors)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pem)  # cert, chain and key from the one file, as HAProxy reads it
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    listener = socket.create_server(("127.0.0.1", 0))
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            with ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(b"ok")
        except (OSError, ssl.SSLError) as exc:  # a failed client handshake ends up here
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return listener, thread, errors


def _client_context(ca: Path) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(ca))  # hostname check + CERT_REQUIRED
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    return ctx


def test_handshake_with_sni_example_local_verifies_against_ca(tmp_path: Path) -> None:
    ca, pem = make_certs(tmp_path)
    listener, thread, _ = _serve_once(pem)
    try:
        with socket.create_connection(listener.getsockname(), timeout=10) as raw:
            with _client_context(ca).wrap_socket(raw, server_hostname="example.local") as tls:
                assert tls.recv(2) == b"ok"
                assert tls.selected_alpn_protocol() == "h2"
                names = [v for k, v in tls.getpeercert()["subjectAltName"]]
                assert names == ["example.local"]
    finally:
        thread.join(timeout=10)
        listener.close()


def test_handshake_for_another_name_is_refused(tmp_path: Path) -> None:
    ca, pem = make_certs(tmp_path)
    listener, thread, _ = _serve_once(pem)
    try:
        with socket.create_connection(listener.getsockname(), timeout=10) as raw:
            with pytest.raises(ssl.SSLCertVerificationError, match="not valid for 'other.local'|match"):
                _client_context(ca).wrap_socket(raw, server_hostname="other.local")
    finally:
        thread.join(timeout=10)
        listener.close()


def test_another_ca_does_not_verify(tmp_path: Path) -> None:
    _, pem = make_certs(tmp_path / "a")
    other_ca, _ = make_certs(tmp_path / "b")
    listener, thread, _ = _serve_once(pem)
    try:
        with socket.create_connection(listener.getsockname(), timeout=10) as raw:
            with pytest.raises(ssl.SSLCertVerificationError):
                _client_context(other_ca).wrap_socket(raw, server_hostname="example.local")
    finally:
        thread.join(timeout=10)
        listener.close()


def test_files_and_modes(tmp_path: Path) -> None:
    paths = make_certs(tmp_path / "new" / "dir")
    assert [p.name for p in paths] == ["ca.pem", "example.local.pem"]
    ca, pem = paths
    assert stat.S_IMODE(pem.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in pem.read_bytes()
    assert b"PRIVATE KEY" not in ca.read_bytes()
    ca_cert = x509.load_pem_x509_certificate(ca.read_bytes())
    assert ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert not list(tmp_path.rglob(".*.tmp"))


def test_existing_pair_is_kept_unless_forced(tmp_path: Path) -> None:
    ca, pem = make_certs(tmp_path)
    before = pem.read_bytes()
    make_certs(tmp_path)
    assert pem.read_bytes() == before
    make_certs(tmp_path, force=True)
    assert pem.read_bytes() != before


def test_ensure_certs_creates_then_reuses(tmp_path: Path) -> None:
    ca, pem = ensure_certs(tmp_path)
    first = (ca.read_bytes(), pem.read_bytes())
    assert ensure_certs(tmp_path) == (ca, pem)
    assert (ca.read_bytes(), pem.read_bytes()) == first


def test_ensure_certs_replaces_a_broken_or_mismatched_pair(tmp_path: Path) -> None:
    ca, pem = ensure_certs(tmp_path)
    pem.write_bytes(b"garbage")
    ensure_certs(tmp_path)
    assert b"BEGIN CERTIFICATE" in pem.read_bytes()
    # A CA from another pair: the server cert no longer chains to it, so both are remade.
    other_ca, _ = make_certs(tmp_path / "other")
    ca.write_bytes(other_ca.read_bytes())
    ensure_certs(tmp_path)
    issuer = x509.load_pem_x509_certificate(pem.read_bytes()).issuer
    assert issuer == x509.load_pem_x509_certificate(ca.read_bytes()).subject


def test_dir_that_is_a_file_is_a_config_error(tmp_path: Path) -> None:
    afile = tmp_path / "f"
    afile.write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        make_certs(afile)


def test_ensure_certs_accepts_a_traditional_ec_key(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization

    ca, pem = make_certs(tmp_path)
    data = pem.read_bytes()
    start = data.index(b"-----BEGIN PRIVATE KEY")
    key = serialization.load_pem_private_key(data[start:], password=None)
    traditional = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL, serialization.NoEncryption()
    )
    assert traditional.startswith(b"-----BEGIN EC PRIVATE KEY")
    pem.write_bytes(data[:start] + traditional)
    before = pem.read_bytes()
    assert ensure_certs(tmp_path) == (ca, pem)
    assert pem.read_bytes() == before  # kept: still a valid pair


def test_ensure_certs_replaces_a_key_that_does_not_match(tmp_path: Path) -> None:
    ca, pem = make_certs(tmp_path / "a")
    _, other = make_certs(tmp_path / "b")
    data, other_data = pem.read_bytes(), other.read_bytes()
    start, other_start = data.index(b"-----BEGIN PRIVATE KEY"), other_data.index(b"-----BEGIN PRIVATE KEY")
    pem.write_bytes(data[:start] + other_data[other_start:])
    ensure_certs(tmp_path / "a")
    # Remade: the file's key matches its certificate again, so a TLS server can load it.
    ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(pem)
