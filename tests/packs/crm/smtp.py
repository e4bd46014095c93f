"""A real SMTP server for the tests (aiosmtpd) with STARTTLS and AUTH, recording every message it accepts."""

from __future__ import annotations

import shutil
import ssl
import subprocess
import threading
from email import message_from_bytes
from pathlib import Path

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.services import free_port

USER, PASSWORD = "crm", "s3cret"


class Recorder:
    """aiosmtpd handler: refuses recipients in ``refuse`` with 550, keeps every accepted message."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.messages: list = []
        self.refuse: set[str] = set()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return "550 5.1.1 no such mailbox"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"

    def by_message_id(self) -> dict[str, int]:
        with self.lock:
            ids = [m["Message-ID"] for m in self.messages]
        return {i: ids.count(i) for i in ids}


def _authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and auth_data.login == USER.encode() and \
        auth_data.password == PASSWORD.encode()
    return AuthResult(success=ok)


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost, made with the openssl program."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run([shutil.which("openssl") or "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert), "-days", "1"], check=True, capture_output=True)
    return cert, key


class SmtpServer:
    """``implicit``: TLS from the first byte (SMTPS, as port 465); otherwise plain with STARTTLS required."""

    def __init__(self, cert: Path, key: Path, implicit: bool = False):
        self.recorder = Recorder()
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert, key)
        self.port = free_port()
        # aiosmtpd does not count implicit TLS as TLS for AUTH, so that server takes mail without a login
        tls = {"ssl_context": context} if implicit else {"tls_context": context, "require_starttls": True,
                                                          "authenticator": _authenticate, "auth_require_tls": True}
        self.controller = Controller(self.recorder, hostname="127.0.0.1", port=self.port, **tls)
        self.client_context = ssl.create_default_context(cafile=str(cert))

    def start(self) -> SmtpServer:
        self.controller.start()
        return self

    def stop(self) -> None:
        self.controller.stop()
