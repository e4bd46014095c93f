"""The ways messages leave the appliance: the outbox (record only), email over SMTP, WhatsApp and voice over
HTTP providers. ``build_channels`` picks each medium's transport from the configuration."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from appliance.packs.crm.channels.http import ProviderClient
from appliance.packs.crm.channels.message import Delivery, Message, Result, Transport
from appliance.packs.crm.channels.outbox import deliver
from appliance.packs.crm.channels.smtp import SmtpTransport
from appliance.packs.crm.channels.voice import VoiceProvider, VoiceTransport
from appliance.packs.crm.channels.whatsapp import WhatsAppTransport
from appliance.packs.crm.settings import CrmConfig
from appliance.sdk import SYSTEM, CircuitBreaker, Clock

if TYPE_CHECKING:
    import redis

__all__ = [
    "IDEMPOTENT_TRANSPORTS",
    "Channels",
    "Delivery",
    "Message",
    "RecordOnly",
    "Result",
    "Transport",
    "build_channels",
    "deliver",
]

#: Transports (the outbox row's ``transport``) on which handing over the same key twice delivers once: an
#: interrupted hand-off through them is simply repeated; through the others (SMTP) it becomes ``unknown``.
IDEMPOTENT_TRANSPORTS = frozenset({"outbox", "http"})


class RecordOnly:
    """The ``outbox`` transport: the outbox row is the delivery (``deliver`` never calls ``send``)."""

    name = "outbox"

    def send(self, messages: list[Message]) -> list[Result]:
        raise RuntimeError("the outbox transport is handled by deliver()")


@dataclass
class Channels:
    """One transport per medium. ``calls`` polls the voice provider for the state of placed calls; it is
    None when calls are only recorded in the outbox (a recorded call is finished at once)."""

    email: Transport
    whatsapp: Transport
    voice: Transport
    calls: VoiceProvider | None
    closers: list[Callable[[], None]] = field(default_factory=list)

    def for_campaign(self, channel: str) -> Transport:
        return self.email if channel == "email" else self.whatsapp

    def close(self) -> None:
        for close in self.closers:
            close()


def build_channels(crm: CrmConfig, sleep: Callable[[float], None], client: redis.Redis | None = None,
                   clock: Clock = SYSTEM) -> Channels:
    """Transports for this configuration. ``sleep`` waits between provider retries (``RunContext.sleep``, so
    a stopping run is not held up by a long ``Retry-After``). ``client``: the Redis where the providers'
    circuit breakers keep their state, so it holds across runs and replicas (None: for this call only).
    ``clock``: the run's (``RunContext.clock``), which the breakers' reset times are measured on."""
    closers: list[Callable[[], None]] = []

    def breaker(name: str) -> CircuitBreaker:
        return CircuitBreaker(name, crm.breaker_threshold, crm.breaker_reset, clock=clock, client=client)

    def provider(name: str, config) -> ProviderClient:
        http = ProviderClient(name, config, breaker(name), crm.provider_max_retries, crm.provider_retry_max_wait,
                              sleep)
        closers.append(http.close)
        return http

    email: Transport = RecordOnly()
    if crm.email_channel == "smtp" and crm.smtp is not None:
        email = SmtpTransport(crm.smtp, breaker("smtp"))
    whatsapp: Transport = RecordOnly()
    if crm.whatsapp_channel == "http" and crm.whatsapp is not None:
        whatsapp = WhatsAppTransport(provider("whatsapp", crm.whatsapp))
    voice: Transport = RecordOnly()
    calls = None
    if crm.voice_channel == "http" and crm.voice is not None:
        calls = VoiceProvider(provider("voice", crm.voice), crm.voice.caller_id)
        voice = VoiceTransport(calls)
    return Channels(email, whatsapp, voice, calls, closers)
