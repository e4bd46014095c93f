"""``/health`` and ``/metrics/prometheus`` on APPLIANCE_HOME's disk: its free space, degraded below
``DISK_FREE_WARN``, and while it is full the failures of what keeps its data there are blamed on it
(degraded, ``disk.affected``) instead of failing the probe; what is not on that disk still does."""

from __future__ import annotations

import pytest

from tests.sidecar.test_health import healthy_cluster
from tests.sidecar.test_metrics import samples
from tests.tmpfs import small_disk


@pytest.mark.process
def test_a_full_home_disk_is_degraded_naming_it_and_blamed_for_what_fails_there(tmp_path, make_client, cluster,
                                                                               redis_server):
    with small_disk(tmp_path / "disk", size="64M") as disk:
        client = make_client(APPLIANCE_HOME=str(disk.path / "home"))
        healthy_cluster(cluster)
        body = client.get("/health").get_json()
        assert body["status"] == "ok", body
        assert body["disk"]["status"] == "ok" and body["disk"]["filesystem"] == "APPLIANCE_HOME"
        assert body["disk"]["type"] == "tmpfs" and body["disk"]["affected"] == []
        assert 0 < body["disk"]["free_bytes"] <= body["disk"]["total_bytes"] == 64 * 1024 * 1024
        assert body["disk"]["warn_below_bytes"] == round(0.05 * body["disk"]["total_bytes"])

        disk.fill()
        response = client.get("/health")
        body = response.get_json()
        assert response.status_code == 200 and body["status"] == "degraded"
        assert (body["disk"]["status"], body["disk"]["free_bytes"], body["disk"]["free_inodes"]) == ("full", 0, 0)
        assert body["components"]["disk"]["status"] == "degraded"
        assert "APPLIANCE_HOME's filesystem (tmpfs): 0 B free of 64 MiB, 0 inodes: full" in \
            body["components"]["disk"]["message"]
        assert str(disk.path) not in response.get_data(as_text=True), "no filesystem path in /health"

        # The worker beside the sidecar keeps its data on that disk: down now, because of it.
        cluster.state.workers.forget(cluster.beat(jobs=[]))
        response = client.get("/health")
        body = response.get_json()
        assert response.status_code == 200 and body["status"] == "degraded", body
        assert body["components"]["worker"]["status"] == "down" and body["disk"]["affected"] == ["worker"]
        assert client.get("/health/ready").status_code == 200
        values = samples(client.get("/metrics/prometheus").get_data(as_text=True))
        assert values[("appliance_disk_full", ())] == 1 and values[("appliance_disk_free_bytes", ())] == 0
        assert values[("appliance_disk_free_inodes", ())] == 0
        assert values[("appliance_component_status", (("component", "disk"),))] == 1

        # This Redis is the test's own (REDIS_URL), on another disk: its failure is no fault of this one.
        redis_server.kill()
        response = client.get("/health")
        assert response.status_code == 503 and response.get_json()["disk"]["affected"] == ["worker"]
        redis_server.start()

        disk.release()
        response = client.get("/health")
        body = response.get_json()
        assert response.status_code == 503 and body["status"] == "unhealthy", "not the disk's fault any more"
        assert body["disk"]["status"] == "ok" and body["disk"]["affected"] == []
        healthy_cluster(cluster)
        assert client.get("/health").get_json()["status"] == "ok"
        values = samples(client.get("/metrics/prometheus").get_data(as_text=True))
        assert values[("appliance_disk_full", ())] == 0 and values[("appliance_disk_free_bytes", ())] > 0


def test_free_space_below_disk_free_warn_is_degraded(make_client, cluster):
    healthy_cluster(cluster)
    body = make_client(DISK_FREE_WARN="100%").get("/health").get_json()
    assert body["status"] == "degraded" and body["disk"]["status"] == "low"
    assert "below DISK_FREE_WARN" in body["components"]["disk"]["message"]
    assert body["disk"]["warn_below_bytes"] == body["disk"]["total_bytes"]
    body = make_client(DISK_FREE_WARN="0").get("/health").get_json()
    assert body["status"] == "ok" and body["disk"]["status"] == "ok" and body["disk"]["warn_below_bytes"] == 0
    free = body["disk"]["free_bytes"]
    body = make_client(DISK_FREE_WARN=f"{free + 2 * 1024**3}B").get("/health").get_json()
    assert body["disk"]["status"] == "low" and body["status"] == "degraded"
