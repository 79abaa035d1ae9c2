"""The agent's client TLS context: trust anchors load on the first handshake, and
verification stays as strict as httpx's default (muto/agent/transport/tls.py), through
the agent's own HTTP client (muto/agent/transport/exchange.py)."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import ssl
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from muto.agent.transport.exchange import DirectHttp, HttpError
from muto.agent.transport.tls import OnDemandTrust, client_tls


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1, signed by its own key: (cert, key) PEM files."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "depot")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return cert_file, key_file


async def get_over_tls(cert: Path, key: Path, context: ssl.SSLContext) -> int:
    """GET / from a one-route HTTPS server on 127.0.0.1 through the agent's client."""
    server_tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_tls.load_cert_chain(cert, key)

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass  # the client refused the certificate
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=server_tls)
    port = server.sockets[0].getsockname()[1]
    try:
        url = f"https://127.0.0.1:{port}/"
        async with DirectHttp(context).stream("GET", url, headers={}, timeout_s=10) as answer:
            return answer.status_code
    finally:
        server.close()


def test_the_anchors_load_on_the_first_handshake_not_before(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # as a depot with its own CA sets it
    context = OnDemandTrust(ssl.PROTOCOL_TLS_CLIENT)
    DirectHttp(context)  # building a client loads nothing
    assert context.cert_store_stats()["x509_ca"] == 0
    assert asyncio.run(get_over_tls(cert, key, context)) == 200
    assert context.cert_store_stats()["x509_ca"] == 1


def test_a_certificate_outside_the_anchors_is_refused(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    context = client_tls()  # certifi's bundle: this certificate is in none of it
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    with pytest.raises(HttpError, match=r"ConnectError: .*CERTIFICATE_VERIFY_FAILED"):
        asyncio.run(get_over_tls(cert, key, context))
