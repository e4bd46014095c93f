"""The secret registry: built from the configuration's own declarations, masking every form a value takes."""

from __future__ import annotations

import html
import json
from urllib.parse import quote, quote_plus

import pytest

from appliance.kernel.contract.packs import load_settings
from appliance.kernel.runtime.redaction import MASK, Redactor

BASE = {"APPLIANCE_HOME": "/tmp/appliance-redaction-test"}


def _config(**env: str):
    return load_settings({**BASE, **env}, env_file=None)


def _declared() -> frozenset[str]:
    return _config().secret_names


def test_every_declared_secret_is_registered_when_set():
    names = _declared()
    assert {"SMTP_PASSWORD", "WHATSAPP_API_TOKEN", "VOICE_API_TOKEN", "ADMIN_TOKEN", "OPENAI_API_KEY"} <= names
    values = {name: f"canary-{name.lower()}-{i:04d}-" + "x" * 32 for i, name in enumerate(sorted(names))}
    env = {name: (f"https://hooks.example/{v}" if "URL" in name else v) for name, v in values.items()}
    redactor = Redactor.from_config(_config(**env))
    assert names <= redactor.names
    for name, value in values.items():
        assert value not in redactor.text(f"error: {env[name]} failed"), name


@pytest.mark.parametrize("encode", [
    lambda v: v, lambda v: quote(v, safe=""), quote_plus, lambda v: json.dumps(v)[1:-1], html.escape,
    lambda v: json.dumps(quote(v, safe=""))[1:-1], lambda v: json.dumps({"e": v}),
])
def test_encoded_forms_are_masked(encode):
    secret = 'p@ss wörd"/&<x>'
    redactor = Redactor.from_config(_config(SMTP_PASSWORD=secret))
    shown = redactor.text(f"before {encode(secret)} after")
    assert encode(secret) not in shown and MASK in shown


def test_url_passwords_of_every_url_setting_and_in_any_text():
    redactor = Redactor.from_config(_config(
        REDIS_URL="redis://:r%2Fpw-1@127.0.0.1:6379/0",
        DATABASE_URL="postgresql://app:pgpw-22@db/crm",
        WHATSAPP_API_URL="https://user:wapw-333@wa.example",
    ))
    assert {"REDIS_URL", "DATABASE_URL", "WHATSAPP_API_URL"} <= redactor.names
    for leaked in ("r/pw-1", "r%2Fpw-1", "pgpw-22", "wapw-333"):
        assert leaked not in redactor.text(f"lost {leaked} here"), leaked
    assert redactor.text("postgresql://u:other-pw@h/x?password=qpw") == "postgresql://u:***@h/x?password=***"


def test_short_values_are_masked_standing_alone_only():
    redactor = Redactor.from_config(_config(ADMIN_TOKEN="ab"))
    assert redactor.text("token ab; tab cab") == "token ***; tab cab"


def test_empty_and_unset_secrets_mask_nothing():
    redactor = Redactor.from_config(_config(ADMIN_TOKEN=""))
    assert redactor.names == frozenset()
    assert redactor.text("nothing to hide here") == "nothing to hide here"


def test_value_is_a_redacted_copy():
    redactor = Redactor.from_config(_config(OPENAI_API_KEY="sk-canary-1234"))
    original = {"error": "key sk-canary-1234", "runs": [("sk-canary-1234", 3)], "sk-canary-1234": None, "n": 2}
    clean = redactor.value(original)
    assert clean == {"error": f"key {MASK}", "runs": [(MASK, 3)], MASK: None, "n": 2}
    assert original["error"] == "key sk-canary-1234"


def test_check_config_document_does_not_carry_the_registry():
    from appliance.config import masked

    doc = masked(_config(SMTP_PASSWORD="smtp-canary-99"))
    assert "secret_values" not in doc and "smtp-canary-99" not in json.dumps(doc)


def test_the_embedded_postgresql_password_file_is_registered(tmp_path):
    config = load_settings({"APPLIANCE_HOME": str(tmp_path)}, env_file=None)
    assert Redactor.from_config(config).names == frozenset(), "no file yet: nothing to mask"
    config.core.database_password_file.parent.mkdir(parents=True)
    config.core.database_password_file.write_text("generated-pg-password-Zx9\n")
    assert Redactor.from_config(config).text("auth failed for generated-pg-password-Zx9") == f"auth failed for {MASK}"


def test_the_output_stream_masks_a_secret_written_in_pieces():
    import io

    from appliance.kernel.runtime.redaction import RedactingStream

    target = io.StringIO()
    stream = RedactingStream(target, Redactor.from_config(_config(ADMIN_TOKEN="admin-canary-777")))
    for piece in ('{"token": "admin-', 'canary', '-777"}', "\n", "tail admin-canary-777"):
        stream.write(piece)
    assert target.getvalue() == '{"token": "***"}\n'
    stream.flush()
    assert target.getvalue() == '{"token": "***"}\ntail ***'
