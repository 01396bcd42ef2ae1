"""Real file servers on 127.0.0.1 for the staging tests: HTTP, HTTPS (a self-signed
certificate made here) and FTP (pyftpdlib), each serving a directory, in threads.

pyftpdlib is built on asyncore/asynchat, which left the standard library in Python 3.12;
its 2.2 release (setup.cfg's floor) declares the ``pyasyncore``/``pyasynchat`` backports
for 3.12+, and on 3.11 a fresh ``pip install pyftpdlib>=2.2`` serves files as it is."""

from __future__ import annotations

import datetime
import http.server
import ipaddress
import ssl
import threading
from functools import partial
from pathlib import Path


class _Handler(http.server.SimpleHTTPRequestHandler):
    """Serves its directory; ``/short/<n>`` announces 1000 bytes and sends ``n``;
    ``/flaky/<key>`` answers 503 the first time, then ``ok``."""

    seen: set = set()

    def do_GET(self):
        if self.path.startswith("/flaky/"):
            first = self.path not in self.seen
            self.seen.add(self.path)
            body = b"busy" if first else b"ok"
            self.send_response(503 if first else 200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if self.path.startswith("/short/"):
            sent = int(self.path.rsplit("/", 1)[1])
            self.send_response(200)
            self.send_header("Content-Length", "1000")
            self.end_headers()
            self.wfile.write(b"x" * sent)
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()

    def log_message(self, *args):
        pass


class HTTPFiles:
    """An HTTP (or, given a cert and key, HTTPS) server of ``root`` on a free port."""

    def __init__(self, root: Path, certfile=None, keyfile=None):
        self.root = root
        self.server = http.server.ThreadingHTTPServer(
            ("127.0.0.1", 0), partial(_Handler, directory=str(root)))
        scheme = "http"
        if certfile:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(certfile, keyfile)
            self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
            scheme = "https"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5)


def self_signed_cert(directory: Path) -> tuple:
    """A certificate for 127.0.0.1 and its key, as PEM files: ``(certfile, keyfile)``."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    certfile, keyfile = directory / "cert.pem", directory / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                          serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return str(certfile), str(keyfile)


class FTPFiles:
    """A pyftpdlib server of ``root`` for one user (read and write), on a free port; with
    ``anonymous=True`` also for anonymous readers, and ``url`` names no user."""

    USER, PASSWORD = "alice", "ftp-pw-4d9a"

    def __init__(self, root: Path, anonymous: bool = False):
        from pyftpdlib.authorizers import DummyAuthorizer
        from pyftpdlib.handlers import FTPHandler
        from pyftpdlib.servers import ThreadedFTPServer

        authorizer = DummyAuthorizer()
        authorizer.add_user(self.USER, self.PASSWORD, str(root), perm="elradfmwMT")
        if anonymous:
            authorizer.add_anonymous(str(root))
        handler = type("Handler", (FTPHandler,), {"authorizer": authorizer,
                                                   "passive_ports": None})
        self.server = ThreadedFTPServer(("127.0.0.1", 0), handler)
        self.port = self.server.socket.getsockname()[1]
        self.url = (f"ftp://127.0.0.1:{self.port}" if anonymous else
                    f"ftp://{self.USER}:{self.PASSWORD}@127.0.0.1:{self.port}")
        self.thread = threading.Thread(target=self.server.serve_forever,
                                       kwargs={"timeout": 0.2}, daemon=True)
        self.thread.start()

    def close(self):
        self.server.close_all()
        self.thread.join(5)
