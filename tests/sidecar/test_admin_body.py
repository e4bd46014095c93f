"""The body of an admin change: empty or a JSON object is accepted; anything else is a 400 or 413 JSON error
and changes nothing (in-process app on a real Redis, then the real gunicorn sidecar for bodies that only a
server sees whole: 10 MB, chunked)."""

from __future__ import annotations

import json

import httpx
import pytest

from appliance.kernel.protocol import keys
from appliance.sidecar.admin import MAX_BODY
from tests.sidecar.cluster import ADMIN_TOKEN
from tests.sidecar.processes import SidecarProcess, process_env

JSON = "application/json"
MULTIPART = "multipart/form-data; boundary=xyz"
FORM = "application/x-www-form-urlencoded"
#: A JSON object of exactly MAX_BODY bytes: the largest accepted body.
LARGEST = b'{"reason": "' + b"x" * (MAX_BODY - 14) + b'"}'


@pytest.mark.parametrize(("body", "content_type", "status"), [
    (b"", None, 202),
    (b"  \n", None, 202),
    (b"{}", JSON, 202),
    (b'{"reason": "by hand"}', FORM, 202),
    (b'{"note": "by hand"}', JSON, 400),  # an unknown option is refused, not ignored
    (LARGEST, JSON, 202),
    (b"{not json", JSON, 400),
    (b"[1, 2]", JSON, 400),
    (b'"trigger"', JSON, 400),
    (b"null", JSON, 400),
    (b"42", None, 400),
    (b"a=b&c=d", FORM, 400),
    (b"--xyz\r\nContent-Disposition: form-data; name=\"f\"\r\n\r\n\x00\xff garbage\r\n--xy", MULTIPART, 400),
    (b"\xff\xfe{", JSON, 400),
    (LARGEST[:-1] + b' }', JSON, 413),
], ids=lambda v: v[:20] if isinstance(v, bytes) else v)
def test_a_trigger_is_queued_only_for_an_empty_body_or_a_json_object(client, cluster, auth, body, content_type,
                                                                        status):
    cluster.publish("tick")
    headers = {**auth, **({"Content-Type": content_type} if content_type else {})}
    response = client.post("/api/jobs/tick/trigger", data=body, headers=headers)
    error = response.get_json()
    assert response.status_code == status, error
    assert response.mimetype == JSON
    assert cluster.state.triggers.pending("tick") == (1 if status == 202 else 0)
    if status != 202:
        assert error["status"] == status and error["message"]
        assert error["error"] == ("bad_request" if status == 400 else "request_entity_too_large")
        assert cluster.state.audit.newest(limit=10) == []


@pytest.mark.parametrize(("method", "path"), [
    ("POST", "/api/jobs/tick/pause"), ("POST", "/api/jobs/tick/resume"), ("DELETE", "/api/locks/tick"),
    ("POST", "/api/dead-letters/DEAD/retry"), ("DELETE", "/api/dead-letters/DEAD"),
])
def test_every_change_refuses_a_bad_body_before_it_changes_anything(client, cluster, auth, method, path):
    cluster.publish("tick")
    cluster.state.pauses.pause("tick", by="ops")
    cluster.start_run("tick")
    dead_id = cluster.state.dead_letters.add("tick", error="boom")
    path = path.replace("DEAD", dead_id)

    def state():
        return (cluster.state.pauses.paused(), cluster.state.dead_letters.newest(limit=10),
                cluster.state.triggers.pending("tick"), cluster.r.get(keys.lock("tick")),
                cluster.state.audit.newest(limit=10))

    before = state()
    for body, status in ((b"[]", 400), (b"{" * (MAX_BODY + 1), 413)):
        response = client.open(path, method=method, data=body, headers={**auth, "Content-Type": JSON})
        assert response.status_code == status, response.get_json()
    assert state() == before
    assert client.open(path, method=method, data=b"{}", headers=auth).status_code < 300, "a good body still works"


def test_without_a_credential_the_body_is_not_even_read(client, cluster):
    """401 whatever the body: the answer to a stranger never depends on what it sent."""
    cluster.publish("tick")
    for body in (b"{}", b"[", b"x" * (MAX_BODY + 1)):
        assert client.post("/api/jobs/tick/trigger", data=body).status_code == 401
    assert cluster.state.triggers.pending("tick") == 0


@pytest.mark.process
def test_gunicorn_sidecar_refuses_a_10_mb_body_and_a_chunked_one(tmp_path, sidecar_env, cluster):
    """Through the real server: a 10 MB body with its length, and one sent chunked (no length up front)."""
    cluster.publish("tick")
    sidecar = SidecarProcess(process_env(sidecar_env), tmp_path / "sidecar.log")
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": JSON}
    big = b'{"x": "' + b"a" * (10 * 1024 * 1024) + b'"}'

    def chunks():
        for start in range(0, len(big), 65536):
            yield big[start:start + 65536]

    try:
        sidecar.wait_ready()
        url = f"{sidecar.url}/api/jobs/tick/trigger"
        sized = httpx.post(url, content=big, headers=headers, timeout=30)
        chunked = httpx.post(url, content=chunks(), headers=headers, timeout=30)
        garbage = httpx.post(url, content=b"--xyz\r\n\x00garbage", timeout=10,
                             headers={**headers, "Content-Type": MULTIPART})
        good = httpx.post(url, content=b"{}", headers=headers, timeout=10)
    finally:
        sidecar.stop()
    assert (sized.status_code, chunked.status_code, garbage.status_code, good.status_code) == (413, 413, 400, 202)
    assert json.loads(chunked.text)["error"] == "request_entity_too_large"
    assert cluster.state.triggers.pending("tick") == 1, "only the good request queued a trigger"
