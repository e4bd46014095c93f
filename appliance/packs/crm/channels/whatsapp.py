"""WhatsApp messages through an HTTP provider (contract in docs/jobs.md).

``POST {WHATSAPP_API_URL}/messages`` with ``{"to", "text", "idempotency_key"}`` answers ``{"id": ...}``; a
repeated idempotency key answers the first message's id without sending again, so this transport is
idempotent.
"""

from __future__ import annotations

from appliance.packs.crm.channels.http import ProviderClient, ProviderError, send_each
from appliance.packs.crm.channels.message import Message, Result


class WhatsAppTransport:
    name = "http"

    def __init__(self, client: ProviderClient):
        self.client = client

    def send(self, messages: list[Message]) -> list[Result]:
        return send_each(messages, self._send_one)

    def _send_one(self, message: Message) -> str:
        answer = self.client.request("POST", "/messages", key=message.key,
                                     body={"to": message.to, "text": message.body, "idempotency_key": message.key})
        if not answer.get("id"):
            raise ProviderError("whatsapp: answer without a message id", transient=True)
        return str(answer["id"])
