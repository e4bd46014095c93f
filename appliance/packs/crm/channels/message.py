"""What goes through a channel and what comes back: ``Message`` and ``Result``."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


class Delivery(StrEnum):
    """How one hand-off ended.

    SENT: the provider accepted it (or the outbox recorded it). FAILED: refused for good (bad address, a 4xx
    answer); sending again will not help. RETRY: not delivered, may be sent again. UNKNOWN: the provider may or
    may not have it and the channel cannot de-duplicate a second try. SKIPPED: never attempted (circuit open,
    run stopping); not counted as an attempt.
    """

    SENT = "sent"
    FAILED = "failed"
    RETRY = "retry"
    UNKNOWN = "unknown"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Message:
    """One message. ``key`` names what is sent (``campaign-recipient:42``) and is the idempotency key."""

    key: str
    tenant_id: int | None
    channel: str  # email | whatsapp | voice
    to: str
    subject: str = ""
    body: str = ""
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Result:
    key: str
    outcome: Delivery
    provider_id: str | None = None
    error: str | None = None
    retry_after: float | None = None  # seconds the provider asked us to wait, when it said so


class Transport(Protocol):
    """A way out: ``outbox`` (record only), ``smtp`` or ``http``.

    ``name`` is what the outbox row records; ``appliance.packs.crm.channels.IDEMPOTENT_TRANSPORTS`` names those
    that deliver a key handed over twice once, which decides what happens to a message whose hand-off was
    interrupted (sent again, or marked unknown for a person).
    """

    name: str

    def send(self, messages: list[Message]) -> list[Result]:
        """Hand over every message; one ``Result`` per message, in order. Must not raise for a bad message."""
        ...
