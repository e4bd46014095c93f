"""``appliance run``'s start step makes a data directory of an earlier version private: log files that were
0644 and directories that were 0755 are tightened, and what it creates itself is private from the start."""

from __future__ import annotations

import os
import stat

from appliance.kernel.contract.packs import load_settings
from appliance.supervise.plan import plan_services
from appliance.supervise.prepare import make_dirs


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_an_earlier_home_is_tightened_and_a_new_one_is_traversable_only(tmp_path, keep_umask):
    old_home, new_home = tmp_path / "old", tmp_path / "new"
    old_home.mkdir()
    old_home.chmod(0o755)
    for name in ("log", "run", "redis", "metrics", "qdrant"):
        (old_home / name).mkdir(parents=True, mode=0o755)
        (old_home / name).chmod(0o755)
    for name in ("worker-error.log", "worker-error.log.1", "supervisord.log"):
        (old_home / "log" / name).write_text("old lines\n")
        (old_home / "log" / name).chmod(0o644)
    for home in (old_home, new_home):
        config = load_settings({"APPLIANCE_HOME": str(home)}, env_file=None)
        make_dirs(config, plan_services(config, which=lambda _: None))
    for name in ("log", "run", "redis", "metrics", "qdrant", "secrets"):
        assert _mode(old_home / name) == 0o700, name
    assert {p.name: _mode(p) for p in (old_home / "log").iterdir()} == {
        name: 0o600 for name in {p.name for p in (old_home / "log").iterdir()}}
    assert (old_home / "log" / "worker-error.log.1").read_text() == "old lines\n"
    assert _mode(old_home) == 0o755, "a directory the operator made is left as it is"
    assert _mode(new_home) == 0o711, "created here: traversable for PostgreSQL's user, not listable"
    assert _mode(new_home / "log" / "sidecar.log") == 0o600
    assert os.umask(0o022) == 0o077, "everything the appliance creates from here on is private"
