"""Calls to an HTTP provider (WhatsApp, voice): bearer token, timeouts, retries on 429 and 5xx that honour
``Retry-After``, and a circuit breaker that stops calling a provider that keeps failing (seed 003).

Every request carries the message's idempotency key (``Idempotency-Key`` header); the provider contract
(docs/jobs.md) says a repeated key returns the first answer instead of sending again, so timeouts and 5xx
answers are retried without risk of a double send.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from appliance.packs.crm.channels.message import Delivery, Message, Result
from appliance.packs.crm.settings import ProviderConfig
from appliance.sdk import SYSTEM, ApplianceError, BreakerState, CircuitBreaker, CircuitOpen

#: First wait between retries when the provider gives no Retry-After; doubles each time.
BASE_BACKOFF = 0.5


class ProviderError(ApplianceError):
    """A request that did not succeed. ``transient``: worth trying again later (429, 5xx, network);
    otherwise the provider refused it for good (4xx). ``retry_after``: the provider's own wait, if given."""

    def __init__(self, message: str, transient: bool, retry_after: float | None = None):
        super().__init__(message)
        self.transient = transient
        self.retry_after = retry_after


@dataclass
class ProviderClient:
    """One provider. ``sleep`` waits between retries and may raise to stop (``RunContext.sleep``)."""

    name: str
    config: ProviderConfig
    breaker: CircuitBreaker
    max_retries: int = 3
    max_wait: float = 30.0
    sleep: Callable[[float], None] = SYSTEM.sleep
    client: httpx.Client | None = None
    _http: httpx.Client = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._http = self.client or httpx.Client(timeout=self.config.timeout)

    def close(self) -> None:
        self._http.close()

    def request(self, method: str, path: str, key: str | None = None, body: Any = None) -> dict:
        """The provider's JSON answer. Raises ``CircuitOpen`` without calling when the breaker is open,
        ``ProviderError`` when the call failed after the allowed retries or was refused. The trial call of a
        half-open breaker is sent once, without retries: one request tells whether the provider is back."""
        retries = 0 if self.breaker.before_call() is BreakerState.HALF_OPEN else self.max_retries
        headers = {"Accept": "application/json"}
        if self.config.token:
            headers["Authorization"] = f"Bearer {self.config.token}"
        if key:
            headers["Idempotency-Key"] = key
        url = f"{self.config.url}{path}"
        error: ProviderError | None = None
        for attempt in range(retries + 1):
            if attempt:
                backoff = BASE_BACKOFF * 2 ** (attempt - 1)
                wait = error.retry_after if error and error.retry_after is not None else backoff
                if wait > self.max_wait:
                    break
                self.sleep(wait)
            try:
                response = self._http.request(method, url, json=body, headers=headers)
            except httpx.HTTPError as exc:
                error = ProviderError(f"{self.name}: {type(exc).__name__}: {exc}", transient=True)
                continue
            if response.status_code == 429 or response.status_code >= 500:
                error = ProviderError(f"{self.name}: HTTP {response.status_code}{_detail(response)}", transient=True,
                                      retry_after=retry_after_seconds(response.headers.get("Retry-After"),
                                                                      self.breaker.clock.now))
                continue
            self.breaker.record_success()
            if response.status_code >= 400:
                raise ProviderError(f"{self.name}: HTTP {response.status_code}{_detail(response)}", transient=False)
            return _json(response)
        self.breaker.record_failure()
        assert error is not None
        if retries:
            error.args = (f"{error.args[0]} (after {retries} retries)",)
        raise error


def send_each(messages: list[Message], send_one: Callable[[Message], str]) -> list[Result]:
    """Hand messages one by one to ``send_one``, which returns the provider's id for the message.

    A refused message fails alone (4xx: FAILED; 429/5xx/network after retries: RETRY with the provider's
    ``Retry-After``); once the circuit is open the rest are SKIPPED without calling the provider.
    """
    results: list[Result] = []
    for index, message in enumerate(messages):
        try:
            provider_id = send_one(message)
        except CircuitOpen as exc:
            results += [Result(m.key, Delivery.SKIPPED, error=str(exc)) for m in messages[index:]]
            break
        except ProviderError as exc:
            outcome = Delivery.RETRY if exc.transient else Delivery.FAILED
            results.append(Result(message.key, outcome, error=str(exc), retry_after=exc.retry_after))
            continue
        results.append(Result(message.key, Delivery.SENT, provider_id))
    return results


def retry_after_seconds(value: str | None, now: Callable[[], datetime] = SYSTEM.now) -> float | None:
    """Seconds from a ``Retry-After`` header: either a number of seconds or an HTTP date."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now()).total_seconds())


def _json(response: httpx.Response) -> dict:
    try:
        data = response.json()
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


def _detail(response: httpx.Response) -> str:
    """A short reason from the provider's error body, never the whole body."""
    error = _json(response).get("error")
    if isinstance(error, dict):
        error = error.get("message")
    return f": {str(error)[:200]}" if error else ""
