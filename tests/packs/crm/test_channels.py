"""The channels against real servers: email through aiosmtpd (STARTTLS, AUTH, refusals), WhatsApp and voice
through the local provider server (tests/packs/crm/providers.py; real providers cannot be reached here):
idempotency keys, 429 with Retry-After, 5xx until the circuit breaker opens."""

from __future__ import annotations

from datetime import UTC

import psycopg

from appliance.kernel.runtime.breaker import CircuitBreaker
from appliance.packs.crm.channels import Delivery, Message, build_channels, deliver
from appliance.packs.crm.channels.http import ProviderClient, retry_after_seconds
from appliance.packs.crm.channels.smtp import SmtpTransport
from appliance.packs.crm.settings import ProviderConfig, SmtpConfig
from tests.packs.crm.smtp import PASSWORD, USER, SmtpServer


def smtp_transport(server, user=USER, password=PASSWORD, threshold=5, timeout=5.0,
                   security="starttls") -> SmtpTransport:
    config = SmtpConfig("localhost", server.port, security, user, password, "CRM <crm@example.com>", timeout)
    return SmtpTransport(config, CircuitBreaker("smtp", threshold, 60), server.client_context)


def mail(key: str, to: str) -> Message:
    return Message(key, None, "email", to, "Subject", "Body")


def test_smtp_sends_over_starttls_with_login_and_a_refused_recipient_fails_alone(smtp_server):
    smtp_server.recorder.refuse.add("gone@example.com")
    results = smtp_transport(smtp_server).send([mail("k:1", "a@example.com"), mail("k:2", "gone@example.com"),
                                                mail("k:3", "b@example.com")])
    assert [r.outcome for r in results] == [Delivery.SENT, Delivery.FAILED, Delivery.SENT]
    assert "550" in results[1].error
    received = smtp_server.recorder.messages
    assert [m["To"] for m in received] == ["a@example.com", "b@example.com"]
    assert received[0]["Message-ID"] == "<k.1@example.com>" == results[0].provider_id


def test_smtp_over_implicit_tls(certificate):
    server = SmtpServer(*certificate, implicit=True).start()
    try:
        (result,) = smtp_transport(server, user="", security="tls").send([mail("k:9", "a@example.com")])
    finally:
        server.stop()
    assert result.outcome is Delivery.SENT and [m["To"] for m in server.recorder.messages] == ["a@example.com"]


def test_smtp_with_a_wrong_password_is_retried_later_and_opens_the_breaker(smtp_server):
    """aiosmtpd answers 535 to the first mechanism; smtplib then tries the next one, which the server lets
    time out, so either reason may come back: both are a failed login, not a sent message."""
    transport = smtp_transport(smtp_server, password="wrong", threshold=2, timeout=1.0)
    for _ in range(2):
        (result,) = transport.send([mail("k:1", "a@example.com")])
        assert result.outcome is Delivery.RETRY and "cannot connect" in result.error
    (result,) = transport.send([mail("k:1", "a@example.com")])
    assert result.outcome is Delivery.SKIPPED and "circuit open" in result.error
    assert smtp_server.recorder.messages == []


def provider_client(provider, sleeps, threshold=3, retries=2) -> ProviderClient:
    return ProviderClient("whatsapp", ProviderConfig(provider.url, "test-token", 5.0),
                          CircuitBreaker("whatsapp", threshold, 60), retries, 30.0, sleeps.append)


def test_429_with_retry_after_is_waited_out_and_the_key_makes_the_repeat_harmless(make_config, provider):
    provider.plan = [(429, {"Retry-After": "2"}), (503, {})]
    sleeps: list[float] = []
    crm = make_config(WHATSAPP_CHANNEL="http", WHATSAPP_API_URL=provider.url, WHATSAPP_API_TOKEN="test-token").crm
    channels = build_channels(crm, sleeps.append)
    try:
        message = Message("campaign-recipient:7", None, "whatsapp", "+12025550100", body="hi")
        (first,) = channels.whatsapp.send([message])
        (again,) = channels.whatsapp.send([message])
    finally:
        channels.close()
    assert first.outcome is Delivery.SENT and again.provider_id == first.provider_id
    assert sleeps == [2.0, 1.0], "Retry-After first, then the doubled backoff"
    assert [r[2] for r in provider.requests] == ["campaign-recipient:7"] * 4
    assert provider.delivered == {"campaign-recipient:7": 1}


def test_repeated_5xx_gives_retry_then_the_breaker_skips_without_calling(provider):
    provider.plan = [(500, {})] * 9
    sleeps: list[float] = []
    client = provider_client(provider, sleeps, threshold=3, retries=2)
    from appliance.packs.crm.channels.whatsapp import WhatsAppTransport

    try:
        results = WhatsAppTransport(client).send(
            [Message(f"k:{i}", None, "whatsapp", "+12025550100", body="x") for i in range(5)])
    finally:
        client.close()
    assert [r.outcome for r in results] == [Delivery.RETRY] * 3 + [Delivery.SKIPPED] * 2
    assert "HTTP 500" in results[0].error and "after 2 retries" in results[0].error
    assert len(provider.requests) == 9, "three messages times three tries, then no call while open"
    assert provider.delivered == {}


def test_a_4xx_refusal_is_final(provider):
    client = ProviderClient("voice", ProviderConfig(provider.url, "bad-token", 5.0), CircuitBreaker("voice"), 2, 30.0,
                            lambda s: None)
    from appliance.packs.crm.channels.voice import VoiceProvider, VoiceTransport

    try:
        (result,) = VoiceTransport(VoiceProvider(client)).send([Message("call:1:1", None, "voice", "+12025550100")])
    finally:
        client.close()
    assert result.outcome is Delivery.FAILED and "401" in result.error and "bad token" in result.error


def test_retry_after_reads_seconds_and_http_dates():
    from datetime import datetime

    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    assert retry_after_seconds("120") == 120.0
    assert retry_after_seconds("Thu, 01 Jan 2026 12:00:30 GMT", lambda: now) == 30.0
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_the_outbox_records_once_per_key_and_never_hands_over_a_delivered_key_again(migrated_db, smtp_server):
    transport = smtp_transport(smtp_server)
    with psycopg.connect(migrated_db, autocommit=True) as conn:
        first = deliver(conn, transport, [mail("reminder:1", "a@example.com")])
        second = deliver(conn, transport, [mail("reminder:1", "a@example.com"), mail("reminder:2", "b@example.com")])
        rows = conn.execute("SELECT idempotency_key, status, transport FROM outbox ORDER BY id").fetchall()
    assert first[0].outcome is Delivery.SENT and second[0].provider_id == first[0].provider_id
    assert rows == [("reminder:1", "sent", "smtp"), ("reminder:2", "sent", "smtp")]
    assert smtp_server.recorder.by_message_id() == {"<reminder.1@example.com>": 1, "<reminder.2@example.com>": 1}
