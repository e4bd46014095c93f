"""The launcher's share of the environment per program (pure), and the launcher itself as a process: it
replaces itself with the program (same pid), with nothing but that share."""

from __future__ import annotations

import subprocess
import sys

import pytest

from appliance.supervise.launch import PROGRAMS, SECRET_NAMES, WITHHELD, program_env

DECLARED = ("ADMIN_TOKEN", "JWT_SECRET", "OPENAI_API_KEY", "SMTP_PASSWORD", "QDRANT_API_KEY", "VOICE_API_TOKEN")
ENV = {
    "PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8", "TZ": "UTC", "APPLIANCE_HOME": "/data",
    "SUPERVISOR_ENABLED": "1", "PYTHONPATH": "/src",
    SECRET_NAMES: ",".join(DECLARED),
    "ADMIN_TOKEN": "s-admin", "JWT_SECRET_FILE": "/run/secrets/jwt", "OPENAI_API_KEY": "s-openai",
    "SMTP_PASSWORD": "s-smtp", "QDRANT_API_KEY": "s-qdrant", "VOICE_API_TOKEN": "",
    "QDRANT__SERVICE__API_KEY": "s-qdrant", "QDRANT__SERVICE__HTTP_PORT": "6333",
    "REDIS_URL": "redis://:s-redis@r:6379/0", "DATABASE_URL": "postgresql://app:s-pg@db/app",
    "APPLIANCE_JOBS_FILE": "/jobs.toml", "MY_CUSTOM_JOB_KEY": "s-custom", "PORT": "3002",
}
BASE = {"PATH", "LANG", "LC_ALL", "TZ", "APPLIANCE_HOME", "SUPERVISOR_ENABLED", "PYTHONPATH"}


@pytest.mark.parametrize("program", ["redis", "postgres", "logs", "fatal"])
def test_services_get_the_base_variables_only(program):
    assert set(program_env(program, ENV)) == BASE


def test_qdrant_gets_its_own_overrides_and_no_application_secret():
    env = program_env("qdrant", ENV)
    assert set(env) == BASE | {"QDRANT__SERVICE__API_KEY", "QDRANT__SERVICE__HTTP_PORT"}


def test_the_worker_gets_everything_but_the_admin_credentials():
    env = program_env("worker", ENV)
    assert "ADMIN_TOKEN" not in env and "JWT_SECRET_FILE" not in env
    assert {"OPENAI_API_KEY", "SMTP_PASSWORD", "QDRANT_API_KEY", "MY_CUSTOM_JOB_KEY", "REDIS_URL"} <= set(env)
    assert not any(name.startswith("QDRANT__") for name in env) and SECRET_NAMES not in env
    assert env[WITHHELD] == "ADMIN_TOKEN,JWT_SECRET", "set (as a value or a file) elsewhere, so named"


def test_the_sidecar_gets_its_credentials_the_qdrant_key_and_the_service_urls():
    env = program_env("sidecar", ENV)
    assert {"ADMIN_TOKEN", "JWT_SECRET_FILE", "QDRANT_API_KEY", "REDIS_URL", "DATABASE_URL", "PORT"} <= set(env)
    assert not {"OPENAI_API_KEY", "SMTP_PASSWORD", "VOICE_API_TOKEN", "QDRANT__SERVICE__API_KEY"} & set(env)
    assert env[WITHHELD] == "OPENAI_API_KEY,SMTP_PASSWORD", "VOICE_API_TOKEN is empty: not set, not withheld"


def test_the_worker_and_the_sidecar_get_the_tracing_settings_and_the_exporters_headers():
    """Both export spans: the ``OTEL_*`` variables reach them, the headers (a collector's credentials, declared
    secrets) included; the services get none of them."""
    traced = {**ENV, SECRET_NAMES: ENV[SECRET_NAMES] + ",OTEL_EXPORTER_OTLP_HEADERS",
              "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318", "OTEL_SERVICE_NAME": "crm",
              "OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer s-otel"}
    otel = {"OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME", "OTEL_EXPORTER_OTLP_HEADERS"}
    for program in ("worker", "sidecar"):
        assert otel <= set(program_env(program, traced)), program
    for program in ("redis", "postgres", "qdrant", "logs", "fatal"):
        assert not otel & set(program_env(program, traced)), program


def test_every_supervised_program_has_a_policy():
    assert set(PROGRAMS) == {"redis", "postgres", "qdrant", "logs", "fatal", "worker", "sidecar"}


def test_the_launcher_execs_the_program_with_its_share():
    """``sh`` prints its own pid and environment: the same pid as the launcher, and only the base names."""
    proc = subprocess.Popen([sys.executable, "-m", "appliance.supervise.launch", "logs", "--", "sh", "-c",
                             "echo $$; env"], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    first, *lines = out.splitlines()
    names = {line.split("=", 1)[0] for line in lines} - {"PWD", "SHLVL", "_"}
    assert names == BASE and "s-" not in out
    assert int(first) == proc.pid, "supervisord signals the program itself"


@pytest.mark.parametrize("argv", [[], ["nope", "--", "true"], ["redis", "true"], ["redis", "--"]])
def test_bad_usage_exits_2(argv):
    done = subprocess.run([sys.executable, "-m", "appliance.supervise.launch", *argv], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2 and "usage" in done.stderr


def test_a_missing_command_exits_127():
    done = subprocess.run([sys.executable, "-m", "appliance.supervise.launch", "redis", "--", "/nonexistent/x"],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 127 and "cannot run" in done.stderr
