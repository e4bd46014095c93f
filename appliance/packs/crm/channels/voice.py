"""Phone calls through an HTTP voice provider (contract in docs/jobs.md).

``POST {VOICE_API_URL}/calls`` with ``{"to", "from", "idempotency_key", "metadata"}`` places a call and answers
``{"id", "status"}``; a repeated idempotency key answers the first call instead of dialling again.
``GET {VOICE_API_URL}/calls/{id}`` answers ``{"id", "status"}`` where status is one of ``queued``, ``ringing``,
``in-progress`` (still going) or ``completed``, ``busy``, ``no-answer``, ``failed``, ``canceled`` (over).
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.packs.crm.channels.http import ProviderClient, ProviderError, send_each
from appliance.packs.crm.channels.message import Message, Result

#: Provider statuses of a call that has ended, and whether it counts as answered.
FINAL_STATUSES = {"completed": True, "busy": False, "no-answer": False, "failed": False, "canceled": False}


@dataclass(frozen=True)
class CallStatus:
    provider_id: str
    status: str

    @property
    def over(self) -> bool:
        return self.status in FINAL_STATUSES

    @property
    def answered(self) -> bool:
        return FINAL_STATUSES.get(self.status, False)


class VoiceProvider:
    """Dials and polls. ``dial`` raises ``CircuitOpen`` or ``ProviderError`` (see ``ProviderClient``)."""

    name = "http"

    def __init__(self, client: ProviderClient, caller_id: str = ""):
        self.client = client
        self.caller_id = caller_id

    def dial(self, message: Message) -> CallStatus:
        body = {"to": message.to, "idempotency_key": message.key, "metadata": message.extra}
        if self.caller_id:
            body["from"] = self.caller_id
        answer = self.client.request("POST", "/calls", key=message.key, body=body)
        if not answer.get("id"):
            raise ProviderError("voice: answer without a call id", transient=True)
        return CallStatus(str(answer["id"]), str(answer.get("status") or "queued"))

    def status(self, provider_id: str) -> CallStatus:
        answer = self.client.request("GET", f"/calls/{provider_id}")
        return CallStatus(provider_id, str(answer.get("status") or "queued"))



class VoiceTransport:
    """The voice provider seen as a ``Transport``, so dials go through the outbox like messages: SENT means
    the provider accepted the call (the result's ``provider_id`` is its call id), not that anyone answered."""

    name = "http"

    def __init__(self, provider: VoiceProvider):
        self.provider = provider

    def send(self, messages: list[Message]) -> list[Result]:
        return send_each(messages, lambda message: self.provider.dial(message).provider_id)
