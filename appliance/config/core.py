"""Core settings: ports, connections, data directory, logging, leases, retries and alerts (seed 004 and 000 names)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from appliance.config.connections import load_database_url, load_redis_url
from appliance.config.env import EnvReader

POSTGRES_SCHEMES = ("postgresql", "postgres")
HTTP_SCHEMES = ("http", "https")


@dataclass(frozen=True)
class AlertConfig:
    enabled: bool
    critical_threshold: int
    slack_enabled: bool
    slack_webhook_url: str
    slack_channel: str
    webhook_url: str
    #: Failures of a job within ``warning_window`` that raise a warning while its streak is below critical.
    warning_threshold: int = 5
    warning_window: float = 3600.0
    #: How often a worker looks for stale jobs, open breakers and an unsafe eviction policy (0: never).
    check_interval: float = 30.0
    #: The dead-man's switch factor (``HEALTH_STALE_FACTOR``, set from the sidecar's section).
    stale_factor: float = 3.0
    #: A pause without an end older than this raises a warning (``PAUSE_ALERT_AFTER``).
    pause_alert_after: float = 86400.0


@dataclass(frozen=True)
class CoreConfig:
    port: int
    is_worker: bool
    worker_enabled: bool
    home: Path
    redis_url: str
    redis_embedded: bool
    database_url: str
    database_embedded: bool
    qdrant_url: str
    qdrant_url_set: bool
    qdrant_api_key: str
    qdrant_bin: str
    log_format: str
    log_level: str
    shutdown_timeout: float
    #: Seconds any PostgreSQL operation may wait for the server's answer before it fails (a partition).
    database_timeout: float
    lock_ttl: float
    max_retries: int
    retry_backoff: float
    schedule_timezone: str
    worker_threads: int
    heartbeat_ttl: float
    history_limit: int
    startup_wait: float
    jobs_file: Path | None
    jobs_enabled: tuple[str, ...]
    alerts: AlertConfig
    #: ``warn`` or ``refuse``: what the worker does when Redis may evict lock keys (maxmemory-policy).
    redis_eviction_policy: str = "warn"
    #: The Qdrant server's gRPC port: the supervised server listens on it, clients dial it.
    qdrant_grpc_port: int = 6334
    #: Seconds a worker's wall clock may be off the shared clock (Redis ``TIME``) before the worker warns and
    #: ``/health`` is degraded; ``appliance audit`` allows for clocks that far behind (docs/worker.md "Clocks").
    clock_skew_warn: float = 1.0
    #: Run starts the whole fleet may make per second (0: no limit): everything due on one instant is spread
    #: over start ticks of 1/N s (``appliance.kernel.protocol.starts``).
    max_starts_per_second: float = 0.0
    #: How often a worker applies the ledger's retention to its jobs (``appliance.worker.retention``).
    retention_interval: float = 3600.0

    @property
    def run_dir(self) -> Path:
        """Sockets and pid files of embedded services."""
        return self.home / "run"

    @property
    def secrets_dir(self) -> Path:
        """Secrets the appliance generates itself (mode 0700, files 0600)."""
        return self.home / "secrets"

    @property
    def database_password_file(self) -> Path | None:
        """The embedded PostgreSQL's generated password; None with an external ``DATABASE_URL``."""
        return self.secrets_dir / "postgres-password" if self.database_embedded else None

    @property
    def database_passfile(self) -> Path:
        """The same password in libpq's passfile format, which the embedded ``DATABASE_URL`` names, so the
        URL itself carries no password."""
        return self.secrets_dir / "postgres.pgpass"

    @property
    def log_dir(self) -> Path:
        return self.home / "log"

    @property
    def metrics_dir(self) -> Path:
        """prometheus_client's multiprocess directory shared by the worker and the sidecar."""
        return self.home / "metrics"

    @property
    def qdrant_path(self) -> Path:
        """Storage of qdrant-client's local mode, the embedded store of earlier releases (carried over to Qdrant
        Edge by the first indexer run)."""
        return self.home / "qdrant"

    @property
    def qdrant_edge_path(self) -> Path:
        """Storage of the embedded Qdrant (Qdrant Edge), used where no Qdrant server runs."""
        return self.home.resolve() / "qdrant-edge"


def load_core(env: EnvReader) -> CoreConfig:
    home = env.path("APPLIANCE_HOME", "./data").absolute()
    redis_raw = env.raw("REDIS_URL")
    redis_url = load_redis_url(env, f"unix://{home}/run/redis.sock")
    db_raw = env.raw("DATABASE_URL")
    database_url = env.url("DATABASE_URL", f"postgresql:///appliance?host={home}/run&user=appliance"
                                           f"&passfile={home}/secrets/postgres.pgpass", POSTGRES_SCHEMES)
    database_url = load_database_url(env, database_url, embedded=db_raw is None)
    qdrant_raw = env.raw("QDRANT_URL")
    jobs_file = env.raw("APPLIANCE_JOBS_FILE")
    if jobs_file is not None and not Path(jobs_file).is_file():
        env.problem("APPLIANCE_JOBS_FILE", jobs_file, "the path of a readable TOML file")
        jobs_file = None
    return CoreConfig(
        port=env.int("PORT", 3002, min=1, max=65535),
        is_worker=env.bool("IS_WORKER", True),
        worker_enabled=env.bool("WORKER_ENABLED", True),
        home=home,
        redis_url=redis_url,
        redis_embedded=redis_raw is None,
        database_url=database_url,
        database_embedded=db_raw is None,
        qdrant_url=env.url("QDRANT_URL", "http://localhost:6333", HTTP_SCHEMES),
        qdrant_url_set=qdrant_raw is not None,
        qdrant_api_key=env.secret("QDRANT_API_KEY"),
        qdrant_bin=env.str("QDRANT_BIN", ""),
        log_format=env.str("LOG_FORMAT", "auto", choices=("auto", "json", "text")),
        log_level=env.str("LOG_LEVEL", "info", choices=("debug", "info", "warning", "error")),
        shutdown_timeout=env.duration("SHUTDOWN_TIMEOUT", 5.0, unit="s", min=0.1),
        database_timeout=env.duration("DATABASE_TIMEOUT", 30.0, unit="s", min=0.5),
        lock_ttl=env.duration("LOCK_TTL", 60.0, unit="s", min=0.3),
        max_retries=env.int("JOB_MAX_RETRIES", 3, min=0, max=20),
        retry_backoff=env.duration("JOB_RETRY_BACKOFF_MS", 5.0, unit="ms", min=0.0),
        schedule_timezone=env.tz("SCHEDULE_TIMEZONE", "UTC"),
        worker_threads=env.int("WORKER_THREADS", 4, min=1, max=64),
        heartbeat_ttl=env.duration("HEARTBEAT_TTL", 30.0, unit="s", min=1.0),
        history_limit=env.int("HISTORY_LIMIT", 100, min=1, max=10000),
        startup_wait=env.duration("STARTUP_WAIT", 30.0, unit="s", min=0.0),
        jobs_file=Path(jobs_file) if jobs_file else None,
        jobs_enabled=env.csv("JOBS_ENABLED"),
        alerts=AlertConfig(
            enabled=env.bool("ALERT_ENABLED", True),
            critical_threshold=env.int("ALERT_CRITICAL_THRESHOLD", 3, min=1),
            slack_enabled=env.bool("ALERT_SLACK_ENABLED", False),
            slack_webhook_url=(env.url("ALERT_SLACK_WEBHOOK_URL", "", HTTP_SCHEMES)
                               if env.secret("ALERT_SLACK_WEBHOOK_URL") else ""),
            slack_channel=env.str("ALERT_SLACK_CHANNEL", ""),
            webhook_url=env.url("ALERT_WEBHOOK_URL", "", HTTP_SCHEMES) if env.secret("ALERT_WEBHOOK_URL") else "",
            warning_threshold=env.int("ALERT_WARNING_THRESHOLD", 5, min=1),
            warning_window=env.duration("ALERT_WARNING_WINDOW", 3600.0, unit="s", min=1.0),
            check_interval=env.duration("ALERT_CHECK_INTERVAL", 30.0, unit="s", min=0.0),
            pause_alert_after=env.duration("PAUSE_ALERT_AFTER", 86400.0, unit="s", min=1.0),
        ),
        redis_eviction_policy=env.str("REDIS_EVICTION_POLICY", "warn", choices=("warn", "refuse")),
        qdrant_grpc_port=env.int("QDRANT_GRPC_PORT", 6334, min=1, max=65535),
        clock_skew_warn=env.duration("CLOCK_SKEW_WARN", 1.0, unit="s", min=0.001),
        max_starts_per_second=env.float("MAX_STARTS_PER_SECOND", 0.0, min=0.0, max=10000.0),
        retention_interval=env.duration("RETENTION_INTERVAL", 3600.0, unit="s", min=1.0),
    )
