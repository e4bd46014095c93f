"""Settings of the CRM job pack: seed 004's environment table, the channels and their providers.

``CHANNEL`` picks how messages leave: ``outbox`` (the default) only records each message in the outbox table,
so the appliance works with no provider accounts; ``live`` sends email over SMTP and WhatsApp and voice
through their HTTP providers. ``EMAIL_CHANNEL``, ``WHATSAPP_CHANNEL`` and ``VOICE_CHANNEL`` override it per
medium. A live medium without its provider settings is a configuration error.
"""

from __future__ import annotations

from dataclasses import dataclass

from appliance.config.env import EnvReader
from appliance.config.seed_names import in_unit, same_duration, same_number

HTTP_SCHEMES = ("http", "https")
SMTP_SECURITY = ("starttls", "tls", "none")
#: Seed 003's names of its API client's settings, read as the project's (see appliance.config.seed_names): the
#: providers' breaker, and the timeout of their HTTP requests (WhatsApp and voice; SMTP is not an API).
SEED_BREAKER_THRESHOLD, SEED_BREAKER_DURATION_MS = "API_CIRCUIT_BREAKER_THRESHOLD", "API_CIRCUIT_BREAKER_DURATION_MS"
SEED_REQUEST_TIMEOUT_MS = "API_REQUEST_TIMEOUT_MS"


@dataclass(frozen=True)
class SmtpConfig:
    host: str
    port: int
    security: str
    user: str
    password: str
    sender: str
    timeout: float


@dataclass(frozen=True)
class ProviderConfig:
    """An HTTP provider (WhatsApp or voice): base URL, bearer token and request timeout."""

    url: str
    token: str
    timeout: float
    caller_id: str = ""


@dataclass(frozen=True)
class CrmConfig:
    campaign_batch_size: int
    campaign_batch_delay: float
    call_scheduler_interval: int
    lead_reminder_interval: int
    call_retention_days: int
    email_channel: str = "outbox"
    whatsapp_channel: str = "outbox"
    voice_channel: str = "outbox"
    smtp: SmtpConfig | None = None
    whatsapp: ProviderConfig | None = None
    voice: ProviderConfig | None = None
    provider_max_retries: int = 3
    provider_retry_max_wait: float = 30.0
    breaker_threshold: int = 5
    breaker_reset: float = 30.0
    campaign_rate_limit: int = 1200
    campaign_max_attempts: int = 3
    campaign_retry_backoff: float = 60.0
    campaign_run_budget: float = 50.0
    call_max_concurrent: int = 3
    call_max_attempts: int = 3
    call_retry_backoff: float = 600.0
    call_max_duration: float = 7200.0
    activity_retention_days: int = 30
    cleanup_batch_size: int = 5000


def load_crm(env: EnvReader) -> CrmConfig:
    _read_seed_names(env)
    channel = env.str("CHANNEL", "outbox", choices=("outbox", "live"))
    live = channel == "live"
    email_channel = env.str("EMAIL_CHANNEL", "smtp" if live else "outbox", choices=("outbox", "smtp"))
    whatsapp_channel = env.str("WHATSAPP_CHANNEL", "http" if live else "outbox", choices=("outbox", "http"))
    voice_channel = env.str("VOICE_CHANNEL", "http" if live else "outbox", choices=("outbox", "http"))
    return CrmConfig(
        campaign_batch_size=env.int("CAMPAIGN_BATCH_SIZE", 100, min=1, max=10000),
        campaign_batch_delay=env.duration("CAMPAIGN_BATCH_DELAY", 5.0, unit="ms", min=0.0),
        call_scheduler_interval=env.int("CALL_SCHEDULER_INTERVAL", 30, min=1, max=86400),
        lead_reminder_interval=env.int("LEAD_REMINDER_INTERVAL", 60, min=1, max=1440),
        call_retention_days=env.int("CALL_RETENTION_DAYS", 90, min=1),
        email_channel=email_channel,
        whatsapp_channel=whatsapp_channel,
        voice_channel=voice_channel,
        smtp=_smtp(env, required=email_channel == "smtp"),
        whatsapp=_provider(env, "WHATSAPP", required=whatsapp_channel == "http"),
        voice=_provider(env, "VOICE", required=voice_channel == "http"),
        provider_max_retries=env.int("PROVIDER_MAX_RETRIES", 3, min=0, max=10),
        provider_retry_max_wait=env.duration("PROVIDER_RETRY_MAX_WAIT", 30.0, unit="s", min=0.0),
        breaker_threshold=env.int("PROVIDER_BREAKER_THRESHOLD", 5, min=1, max=1000),
        breaker_reset=env.duration("PROVIDER_BREAKER_RESET", 30.0, unit="s", min=0.0),
        campaign_rate_limit=env.int("CAMPAIGN_RATE_LIMIT", 1200, min=0),
        campaign_max_attempts=env.int("CAMPAIGN_MAX_ATTEMPTS", 3, min=1, max=100),
        campaign_retry_backoff=env.duration("CAMPAIGN_RETRY_BACKOFF", 60.0, unit="s", min=0.0),
        campaign_run_budget=env.duration("CAMPAIGN_RUN_BUDGET", 50.0, unit="s", min=0.1),
        call_max_concurrent=env.int("CALL_MAX_CONCURRENT", 3, min=1, max=1000),
        call_max_attempts=env.int("CALL_MAX_ATTEMPTS", 3, min=1, max=100),
        call_retry_backoff=env.duration("CALL_RETRY_BACKOFF", 600.0, unit="s", min=0.0),
        call_max_duration=env.duration("CALL_MAX_DURATION", 7200.0, unit="s", min=1.0),
        activity_retention_days=env.int("ACTIVITY_RETENTION_DAYS", 30, min=1),
        cleanup_batch_size=env.int("CLEANUP_BATCH_SIZE", 5000, min=1, max=100000),
    )


def _read_seed_names(env: EnvReader) -> None:
    env.alias("PROVIDER_BREAKER_THRESHOLD", SEED_BREAKER_THRESHOLD, same=same_number)
    # Seed 003's durations are in milliseconds, the project's in seconds: read with their unit.
    env.alias("PROVIDER_BREAKER_RESET", SEED_BREAKER_DURATION_MS, convert=in_unit("ms"), same=same_duration("s"))
    for own in ("WHATSAPP_TIMEOUT", "VOICE_TIMEOUT"):
        env.alias(own, SEED_REQUEST_TIMEOUT_MS, convert=in_unit("ms"), same=same_duration("s"))


def _smtp(env: EnvReader, required: bool) -> SmtpConfig:
    host = env.str("SMTP_HOST", "")
    if required and not host:
        env.problem("SMTP_HOST", "", "a host name when email is sent over SMTP (EMAIL_CHANNEL=smtp or CHANNEL=live)")
    security = env.str("SMTP_SECURITY", "starttls", choices=SMTP_SECURITY)
    default_port = {"starttls": 587, "tls": 465, "none": 25}[security]
    return SmtpConfig(
        host=host,
        port=env.int("SMTP_PORT", default_port, min=1, max=65535),
        security=security,
        user=env.str("SMTP_USER", ""),
        password=env.secret("SMTP_PASSWORD"),
        sender=env.str("SMTP_FROM", "CRM <noreply@localhost>"),
        timeout=env.duration("SMTP_TIMEOUT", 10.0, unit="s", min=0.1),
    )


def _provider(env: EnvReader, prefix: str, required: bool) -> ProviderConfig:
    url = env.url(f"{prefix}_API_URL", "", HTTP_SCHEMES)
    if required and not url:
        env.problem(f"{prefix}_API_URL", "", f"the provider's base URL when {prefix.lower()} goes out over HTTP "
                                             f"({prefix}_CHANNEL=http or CHANNEL=live)")
    return ProviderConfig(
        url=url.rstrip("/"),
        token=env.secret(f"{prefix}_API_TOKEN"),
        timeout=env.duration(f"{prefix}_TIMEOUT", 10.0, unit="s", min=0.1),
        caller_id=env.str(f"{prefix}_CALLER_ID", "") if prefix == "VOICE" else "",
    )
