"""The sidecar's settings (``appliance/config/sidecar.py``): defaults, limits, and every problem at once."""

from __future__ import annotations

import pytest

from appliance.config import ConfigError
from appliance.config.sidecar import FreeSpace
from appliance.kernel.contract.packs import load_settings

BASE = {"APPLIANCE_HOME": "/tmp/appliance-sidecar-config"}


def load(**env: str):
    return load_settings({**BASE, **env}, env_file=None).sidecar


def test_defaults():
    side = load()
    assert (side.stale_factor, side.check_timeout, side.cache_ttl) == (3.0, 0.8, 1.0)
    assert (side.workers, side.threads, side.history_default, side.dashboard_refresh) == (2, 16, 50, 5.0)
    assert not side.admin_enabled
    assert side.disk_free_warn == FreeSpace(percent=5.0) and side.disk_free_warn.of(1000) == 50


@pytest.mark.parametrize(("env", "enabled"), [
    ({"ADMIN_TOKEN": "t0ken-abc"}, True),
    ({"JWT_SECRET": "x" * 32}, True),
    ({"ADMIN_TOKEN": ""}, False),
])
def test_admin_surface_exists_only_with_a_credential(env, enabled):
    assert load(**env).admin_enabled is enabled


def test_units_are_accepted():
    side = load(HEALTH_CHECK_TIMEOUT="500ms", HEALTH_CACHE_TTL="2s", DASHBOARD_REFRESH="10")
    assert (side.check_timeout, side.cache_ttl, side.dashboard_refresh) == (0.5, 2.0, 10.0)


def test_every_bad_setting_is_reported_together_without_the_secret():
    with pytest.raises(ConfigError) as err:
        load(HEALTH_CHECK_TIMEOUT="2", HEALTH_STALE_FACTOR="0.5", JWT_SECRET="short-secret-value",
             SIDECAR_WORKERS="0", SIDECAR_THREADS="many", DASHBOARD_REFRESH="0.1", HEALTH_CACHE_TTL="-1")
    text = "\n".join(err.value.problems)
    for name in ("HEALTH_CHECK_TIMEOUT", "HEALTH_STALE_FACTOR", "JWT_SECRET", "SIDECAR_WORKERS", "SIDECAR_THREADS",
                 "DASHBOARD_REFRESH", "HEALTH_CACHE_TTL"):
        assert name in text, (name, text)
    assert "at most 1s" in text
    assert "short-secret-value" not in text


@pytest.mark.parametrize(("value", "bytes_of_1gib"), [
    ("10%", round(0.1 * 1024**3)), ("0", 0), ("500MB", 500 * 1000**2), ("2GiB", 2 * 1024**3),
    ("512 mib", 512 * 1024**2), ("1.5GB", 1_500_000_000), ("4096", 4096),
])
def test_disk_free_warn_is_a_share_or_an_amount(value, bytes_of_1gib):
    assert load(DISK_FREE_WARN=value).disk_free_warn.of(1024**3) == bytes_of_1gib


@pytest.mark.parametrize("value", ["lots", "150%", "-5%", "10 GBs", "5%%"])
def test_a_bad_disk_free_warn_is_reported_with_what_is_expected(value):
    with pytest.raises(ConfigError) as err:
        load(DISK_FREE_WARN=value)
    assert f"DISK_FREE_WARN={value}: expected a share of the disk like 5%" in "\n".join(err.value.problems)
