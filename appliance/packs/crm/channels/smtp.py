"""Email over SMTP: plain, STARTTLS or implicit TLS, with optional login.

SMTP has no idempotency key: a message whose conversation broke off after it was handed over may or may not
have been accepted, so it comes back UNKNOWN (a person decides), never RETRY. Each message carries a
``Message-ID`` made from its idempotency key, so a copy that did go out twice can at least be recognised.
"""

from __future__ import annotations

import smtplib
import ssl
from email.message import EmailMessage
from email.utils import parseaddr

from appliance.packs.crm.channels.message import Delivery, Message, Result
from appliance.packs.crm.settings import SmtpConfig
from appliance.sdk import CircuitBreaker, CircuitOpen


class SmtpTransport:
    name = "smtp"

    def __init__(self, config: SmtpConfig, breaker: CircuitBreaker, tls_context: ssl.SSLContext | None = None):
        self.config = config
        self.breaker = breaker
        self.tls_context = tls_context or ssl.create_default_context()

    def send(self, messages: list[Message]) -> list[Result]:
        """One SMTP session for the batch; a refused recipient fails alone, a broken session stops the batch."""
        try:
            self.breaker.before_call()
            session = self._connect()
        except CircuitOpen as exc:
            return [Result(m.key, Delivery.SKIPPED, error=str(exc)) for m in messages]
        except (OSError, smtplib.SMTPException) as exc:
            self.breaker.record_failure()
            return [Result(m.key, Delivery.RETRY, error=f"smtp: cannot connect: {_reason(exc)}") for m in messages]
        self.breaker.record_success()
        results: list[Result] = []
        try:
            for index, message in enumerate(messages):
                result = self._send_one(session, message)
                results.append(result)
                if result.outcome is Delivery.UNKNOWN:
                    results += [Result(m.key, Delivery.SKIPPED, error="smtp: session broke off")
                                for m in messages[index + 1:]]
                    break
        finally:
            try:
                session.quit()
            except (OSError, smtplib.SMTPException):
                session.close()
        return results

    def _connect(self) -> smtplib.SMTP:
        c = self.config
        if c.security == "tls":
            session: smtplib.SMTP = smtplib.SMTP_SSL(c.host, c.port, timeout=c.timeout, context=self.tls_context)
        else:
            session = smtplib.SMTP(c.host, c.port, timeout=c.timeout)
        try:
            if c.security == "starttls":
                session.starttls(context=self.tls_context)
            if c.user:
                session.login(c.user, c.password)
        except BaseException:
            session.close()
            raise
        return session

    def _send_one(self, session: smtplib.SMTP, message: Message) -> Result:
        mail = EmailMessage()
        mail["From"] = self.config.sender
        mail["To"] = message.to
        mail["Subject"] = message.subject
        mail["Message-ID"] = _message_id(message.key, self.config.sender)
        mail.set_content(message.body)
        try:
            refused = session.send_message(mail)
        except smtplib.SMTPRecipientsRefused as exc:
            code, text = next(iter(exc.recipients.values()))
            return _refusal(message.key, code, text)
        except (smtplib.SMTPSenderRefused, smtplib.SMTPDataError) as exc:
            return _refusal(message.key, exc.smtp_code, exc.smtp_error)
        except (OSError, smtplib.SMTPException) as exc:
            return Result(message.key, Delivery.UNKNOWN, error=f"smtp: {_reason(exc)}; the server may have the message")
        if refused:
            code, text = next(iter(refused.values()))
            return _refusal(message.key, code, text)
        return Result(message.key, Delivery.SENT, mail["Message-ID"])


def _refusal(key: str, code: int, text: bytes | str) -> Result:
    """A 5xx answer is final; a 4xx answer means try later."""
    reason = text.decode(errors="replace") if isinstance(text, bytes) else str(text)
    outcome = Delivery.FAILED if 500 <= code < 600 else Delivery.RETRY
    return Result(key, outcome, error=f"smtp: {code} {reason}"[:300])


def _message_id(key: str, sender: str) -> str:
    address = parseaddr(sender)[1]
    domain = address.rpartition("@")[2] or "localhost"
    return f"<{key.replace(':', '.')}@{domain}>"


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:300]



