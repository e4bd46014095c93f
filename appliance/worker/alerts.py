"""Alerts after ``ALERT_CRITICAL_THRESHOLD`` consecutive failures of a job, and one recovery message.

The count lives in Redis, so with several replicas the alert is sent once for the cluster: the replica whose
failure reaches the threshold sends it, and the replica whose success ends the streak sends the recovery.
A log line is always written; Slack (``ALERT_SLACK_*``) and a generic JSON webhook (``ALERT_WEBHOOK_URL``)
are sent when configured. Delivery failures are logged and never fail the run.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import httpx
import redis

from appliance import keys
from appliance.config.core import AlertConfig
from appliance.logs import fields
from appliance.owner import iso, utcnow
from appliance.redaction import Redactor

log = logging.getLogger("appliance.alerts")

# KEYS[1] appliance:alerts   ARGV[1] job
# Returns the new number of consecutive failures.
_FAILED = "return redis.call('HINCRBY', KEYS[1], ARGV[1], 1)"


class Alerter:
    """``redactor`` (``Redactor.from_config(config)``) masks the alert's text before it leaves the process: a
    failing run's error may quote a secret, and a webhook is outside the log's redaction. Without one, URL
    passwords are still masked."""

    def __init__(self, client: redis.Redis, config: AlertConfig, timeout: float = 5.0,
                 redactor: Redactor | None = None):
        self.config = config
        self._failed = client.register_script(_FAILED)
        self.timeout = timeout
        self.redactor = redactor or Redactor()

    def failed(self, job: str, error: str) -> None:
        if not self.config.enabled:
            return
        try:
            streak = int(self._failed(keys=[keys.ALERTS], args=[job]))
        except redis.RedisError:
            return
        if streak == self.config.critical_threshold:
            self._send("critical", job, f"job {job} failed {streak} times in a row: {error}", streak)

    def succeeded(self, job: str, streak: int) -> None:
        """``streak``: the consecutive failures this success ended (reset by the run's finish script)."""
        if self.config.enabled and streak >= self.config.critical_threshold:
            self._send("recovered", job, f"job {job} succeeded again after {streak} consecutive failures", streak)

    def _send(self, state: str, job: str, text: str, streak: int) -> None:
        level = logging.ERROR if state == "critical" else logging.INFO
        text = self.redactor.text(text)
        log.log(level, "ALERT %s: %s", state, text, extra=fields(alert=state, job=job, consecutive_failures=streak))
        payload = {"state": state, "job": job, "message": text, "consecutive_failures": streak, "at": iso(utcnow())}
        targets: list[tuple[str, dict[str, Any]]] = []
        if self.config.slack_enabled and self.config.slack_webhook_url:
            slack: dict[str, Any] = {"text": (":rotating_light: " if state == "critical" else ":white_check_mark: ") + text}
            if self.config.slack_channel:
                slack["channel"] = self.config.slack_channel
            targets.append((self.config.slack_webhook_url, slack))
        if self.config.webhook_url:
            targets.append((self.config.webhook_url, payload))
        if targets:
            threading.Thread(target=self._post_all, args=(targets,), name="alert", daemon=True).start()

    def _post_all(self, targets: list[tuple[str, dict[str, Any]]]) -> None:
        for url, body in targets:
            try:
                httpx.post(url, json=body, timeout=self.timeout).raise_for_status()
            except httpx.HTTPError as exc:
                log.warning("alert delivery failed: %s", type(exc).__name__)
