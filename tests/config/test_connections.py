"""Reading the managed Redis and PostgreSQL settings: TLS files into the URL, Sentinel URLs, and the problems
reported for each bad combination (every one names its variable)."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlsplit

import pytest

from appliance.config import ConfigError
from appliance.config.connections import parse_sentinel_url
from appliance.kernel.contract.packs import load_settings


@pytest.fixture
def pem(tmp_path):
    path = tmp_path / "ca.pem"
    path.write_text("-----BEGIN CERTIFICATE-----\n")
    return str(path)


def _core(tmp_path, **env):
    return load_settings({"APPLIANCE_HOME": str(tmp_path), **env}, env_file=None).core


def _query(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query))


def test_tls_files_become_url_parameters(tmp_path, pem):
    core = _core(tmp_path, REDIS_URL="rediss://u:pw@redis.internal:6380/0", REDIS_TLS_CA_FILE=pem,
                 DATABASE_URL="postgresql://app:pw@db.internal/crm", DATABASE_TLS_CA_FILE=pem)
    assert _query(core.redis_url) == {"ssl_ca_certs": pem}
    assert _query(core.database_url) == {"sslmode": "verify-full", "sslrootcert": pem}
    assert not core.redis_embedded and not core.database_embedded


def test_a_parameter_in_the_url_wins(tmp_path, pem):
    core = _core(tmp_path, DATABASE_URL=f"postgresql://db/crm?sslmode=verify-ca&sslrootcert={pem}",
                 DATABASE_TLS_CA_FILE=str(tmp_path / "ca.pem"))
    assert _query(core.database_url) == {"sslmode": "verify-ca", "sslrootcert": pem}


@pytest.mark.parametrize("env, variable", [
    ({"REDIS_URL": "redis://h:6379/0", "REDIS_TLS_CA_FILE": "{pem}"}, "REDIS_TLS_CA_FILE"),
    ({"REDIS_URL": "rediss://h:6379/0", "REDIS_TLS_CA_FILE": "/nonexistent/ca.pem"}, "REDIS_TLS_CA_FILE"),
    ({"REDIS_URL": "rediss://h:6379/0?ssl_ca_certs=/nonexistent/ca.pem"}, "REDIS_URL"),
    ({"DATABASE_TLS_CA_FILE": "{pem}"}, "DATABASE_TLS_CA_FILE"),
    ({"DATABASE_URL": "postgresql://db/crm?sslmode=verify-full"}, "DATABASE_URL"),
    ({"DATABASE_URL": "postgresql://db/crm?sslmode=sometimes"}, "DATABASE_URL"),
    ({"REDIS_URL": "redis+sentinel://:pw@s1:26379,s2:x/mymaster"}, "REDIS_URL"),
    ({"REDIS_URL": "redis+sentinel://:pw@s1:26379"}, "REDIS_URL"),
])
def test_bad_combinations_are_reported_by_name(tmp_path, pem, env, variable):
    with pytest.raises(ConfigError) as error:
        _core(tmp_path, **{k: v.format(pem=pem) for k, v in env.items()})
    assert any(p.startswith(f"{variable}=") for p in error.value.problems), error.value.problems
    assert "pw@" not in str(error.value)


def test_sentinel_url():
    target = parse_sentinel_url("rediss+sentinel://app:p%40ss@s1:26379,[::1]:26380,s3/mymaster/2"
                                "?sentinel_password=sp&ssl_ca_certs=/ca.pem")
    assert target.sentinels == (("s1", 26379), ("::1", 26380), ("s3", 26379))
    assert (target.master, target.db, target.username, target.password, target.tls) == \
        ("mymaster", 2, "app", "p@ss", True)
    assert dict(target.options) == {"sentinel_password": "sp", "ssl_ca_certs": "/ca.pem"}


def test_sentinel_url_is_accepted_and_its_passwords_registered(tmp_path):
    from appliance.kernel.runtime.redaction import Redactor

    config = load_settings({"APPLIANCE_HOME": str(tmp_path),
                          "REDIS_URL": "redis+sentinel://:master-pw-1@s1:26379,s2:26379/mymaster?sentinel_password=sent-pw-2"},
                         env_file=None)
    assert config.core.redis_url.startswith("redis+sentinel://") and not config.core.redis_embedded
    shown = Redactor.from_config(config).text("master-pw-1 and sent-pw-2")
    assert "master-pw-1" not in shown and "sent-pw-2" not in shown
