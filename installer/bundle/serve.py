"""The bundle's apt repository served to the hosts over HTTPS from the installer host, for the length of
one install: read-only, GET/HEAD only, on the address the hosts route to, with a certificate from the
site CA (issued when the first host connects, so the install's own PKI play can make the CA first).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import socket
import ssl
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from aicc.installer.errors import InputError

DEFAULT_PORT = 8790


def source_address(peer: str) -> str:
    """The installer's address on the route to `peer` (no packet is sent: a UDP connect picks the route)."""
    family = socket.AF_INET6 if ":" in peer else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.connect((peer, 9))
        except OSError as exc:
            raise InputError(f"no route from this machine to host {peer}: {exc.strerror}") from None
        return str(s.getsockname()[0])


class _Handler(SimpleHTTPRequestHandler):
    """GET and HEAD of files only (the base class answers every other method 501)."""

    # Quiet: apt asks for hundreds of files; failures show in apt's own error on the host.
    def log_message(self, format: str, *args: Any) -> None:
        return

    def list_directory(self, path: str | Any) -> None:
        self.send_error(403, "no listings")


class _TLSServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], root: Path, pki: Path, host: str) -> None:
        super().__init__(address, partial(_Handler, directory=str(root)))
        self.pki, self.host = pki, host
        self._context: ssl.SSLContext | None = None
        self._lock = threading.Lock()

    def context(self) -> ssl.SSLContext:
        with self._lock:
            if self._context is None:
                self._context = _server_context(self.pki, self.host)
            return self._context

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        try:
            return self.context().wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr
        except (OSError, ssl.SSLError):
            sock.close()
            raise


def _server_context(pki: Path, host: str) -> ssl.SSLContext:
    """A one-day certificate for `host`, issued by the site CA, in a context that speaks TLS 1.2+."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    try:
        ca_cert = x509.load_pem_x509_certificate((pki / "ca.crt").read_bytes())
        ca_key = serialization.load_pem_private_key((pki / "ca.key").read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise InputError(f"cannot read the site CA: {exc}", where=str(pki)) from None
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    try:
        san: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        san = x509.DNSName(host)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"aicc bundle server {host}")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([san]), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())  # type: ignore[arg-type]
    )
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    with tempfile.TemporaryDirectory(prefix="aicc-bundle-tls-") as tmp:
        crt, pem = Path(tmp) / "server.crt", Path(tmp) / "server.key"
        crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        pem.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        ctx.load_cert_chain(crt, pem)
    return ctx


@contextmanager
def serving(root: Path, pki: Path, address: str, port: int = DEFAULT_PORT) -> Iterator[str]:
    """Serve `root` at https://ADDRESS:PORT/ while the block runs; yields the URL."""
    if not (root / "dists").is_dir():
        raise InputError(
            "the site's bundle has no apt repository",
            where=str(root),
            fix="aicc bundle import FILE --site DIR",
        )
    try:
        server = _TLSServer((address, port), root, pki, address)
    except OSError as exc:
        raise InputError(
            f"cannot serve the bundle on {address}:{port}: {exc.strerror}",
            fix="free the port, or set packages.serve_port in aicc.yml",
        ) from None
    thread = threading.Thread(target=server.serve_forever, name="aicc-bundle-server", daemon=True)
    thread.start()
    host = f"[{address}]" if ":" in address else address
    try:
        yield f"https://{host}:{port}/"
    finally:
        server.shutdown()
        server.server_close()
