"""WhatsApp messages through an HTTP provider (contract in docs/jobs.md).

``POST {WHATSAPP_API_URL}/messages`` with ``{"to", "text", "idempotency_key"}`` answers ``{"id": ...}``; a
repeated idempotency key answers the first message's id without sending again, so this transport is
idempotent.
"""

from __future__ import annotations

from appliance.breaker import CircuitOpen
from appliance.channels.http import ProviderClient, ProviderError
from appliance.channels.message import Message, Outcome, Result


class WhatsAppTransport:
    name = "http"
    idempotent = True

    def __init__(self, client: ProviderClient):
        self.client = client

    def send(self, messages: list[Message]) -> list[Result]:
        results: list[Result] = []
        for index, message in enumerate(messages):
            try:
                answer = self.client.request("POST", "/messages", key=message.key,
                                             body={"to": message.to, "text": message.body,
                                                   "idempotency_key": message.key})
            except CircuitOpen as exc:
                results += [Result(m.key, Outcome.SKIPPED, error=str(exc)) for m in messages[index:]]
                break
            except ProviderError as exc:
                outcome = Outcome.RETRY if exc.transient else Outcome.FAILED
                results.append(Result(message.key, outcome, error=str(exc), retry_after=exc.retry_after))
                continue
            provider_id = answer.get("id")
            if not provider_id:
                results.append(Result(message.key, Outcome.RETRY, error="whatsapp: answer without a message id"))
                continue
            results.append(Result(message.key, Outcome.SENT, str(provider_id)))
        return results
