"""The embedded PostgreSQL's password files and SCRAM verifier (that the server accepts the verifier, and the
password through the passfile, is shown against a real server by tests/appliance/test_pg_upgrade.py)."""

from __future__ import annotations

import base64
import stat

from appliance.supervise.pgaccess import HBA, load_password, scram_verifier


def _mode(path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_password_is_generated_once_kept_private_and_rotated_by_deleting_it(tmp_path):
    secrets_dir = tmp_path / "secrets"
    password_file, passfile = secrets_dir / "postgres-password", secrets_dir / "postgres.pgpass"
    first = load_password(password_file, passfile)
    assert len(first) >= 40
    assert (_mode(secrets_dir), _mode(password_file), _mode(passfile)) == (0o700, 0o600, 0o600)
    assert passfile.read_text() == f"*:*:*:appliance:{first}\n"
    assert load_password(password_file, passfile) == first
    password_file.unlink()
    second = load_password(password_file, passfile)
    assert second != first and passfile.read_text().endswith(f":{second}\n")


def test_an_operator_chosen_password_is_escaped_for_libpq(tmp_path):
    password_file, passfile = tmp_path / "s" / "postgres-password", tmp_path / "s" / "postgres.pgpass"
    password_file.parent.mkdir()
    password_file.write_text("a:b\\c\n")
    password_file.chmod(0o644)
    assert load_password(password_file, passfile) == "a:b\\c"
    assert passfile.read_text() == "*:*:*:appliance:a\\:b\\\\c\n"
    assert _mode(password_file) == 0o600, "tightened"


def test_the_verifier_is_scram_sha_256_and_salted():
    salt = b"0123456789abcdef"
    verifier = scram_verifier("pencil", salt=salt)
    method, rest = verifier.split("$", 1)
    iterations_salt, keys = rest.split("$")
    iterations, salt_b64 = iterations_salt.split(":")
    stored, server = keys.split(":")
    assert (method, iterations, base64.b64decode(salt_b64)) == ("SCRAM-SHA-256", "4096", salt)
    assert len(base64.b64decode(stored)) == len(base64.b64decode(server)) == 32
    assert scram_verifier("pencil", salt=salt) == verifier and scram_verifier("pencil") != verifier
    assert "pencil" not in verifier


def test_pg_hba_accepts_only_scram_and_rejects_the_superuser():
    rules = [line.split() for line in HBA.splitlines() if line and not line.startswith("#")]
    assert {rule[-1] for rule in rules} == {"reject", "scram-sha-256"}
    assert [rule for rule in rules if rule[-1] == "reject"] and all(
        rule[2] == "postgres" for rule in rules if rule[-1] == "reject")
    assert all(rule[0] == "local" or rule[3] in ("127.0.0.1/32", "::1/128") for rule in rules)
