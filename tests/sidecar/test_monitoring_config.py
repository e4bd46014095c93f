"""``config/prometheus/alerts.yml`` (``promtool check rules`` and ``promtool test rules``) and
``config/grafana/appliance.json``: valid, and every metric they query is one the appliance exposes."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import yaml
from prometheus_client.metrics import MetricWrapperBase

from appliance.kernel.runtime import metrics as worker_metrics
from appliance.kernel.runtime.metrics import Lazy
from appliance.packs.knowledge import metrics as knowledge_metrics
from tests.conftest import _require
from tests.sidecar.test_metrics import samples
from tests.worker.harness import REPO

PROMETHEUS = REPO / "config" / "prometheus"
GRAFANA = REPO / "config" / "grafana" / "appliance.json"
METRIC_NAME = re.compile(r"\bappliance_[a-z_]+\b")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def promtool(*args: str) -> str:
    _require("promtool")
    result = subprocess.run([shutil.which("promtool") or "promtool", *args], capture_output=True, text=True, timeout=60,
                            cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_alert_rules_pass_promtool_check():
    assert "SUCCESS" in promtool("check", "rules", "alerts.yml")


def test_alert_rules_fire_as_their_unit_tests_expect():
    assert "SUCCESS" in promtool("test", "rules", "alerts.test.yml")


def exposed_names(client, cluster) -> set[str]:
    """Sample names the worker's metrics module and the packs' define, plus those the sidecar computes at scrape
    time."""
    names: set[str] = set()
    for module in (worker_metrics, knowledge_metrics):
        for value in vars(module).values():
            metric = value.get() if isinstance(value, Lazy) else value
            if isinstance(metric, MetricWrapperBase):
                for family in metric.describe():
                    names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    cluster.publish("tick")
    cluster.beat(jobs=["tick"])
    names.update(name for name, _ in samples(client.get("/metrics/prometheus").get_data(as_text=True)))
    return names


def test_every_queried_metric_is_exposed(client, cluster):
    exposed = exposed_names(client, cluster)
    dashboard = json.loads(GRAFANA.read_text())
    grafana_exprs = [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]
    queried = set(METRIC_NAME.findall((PROMETHEUS / "alerts.yml").read_text()))
    queried |= {name for expr in grafana_exprs for name in METRIC_NAME.findall(expr)}
    assert len(queried) > 10
    assert queried <= exposed, sorted(queried - exposed)


def test_lost_leases_are_queried_by_their_new_name_while_the_old_one_is_still_exposed(client, cluster):
    exposed = exposed_names(client, cluster)
    assert {"appliance_lease_lost_total", "appliance_lock_lost_total"} <= exposed
    rules = yaml.safe_load((PROMETHEUS / "alerts.yml").read_text())
    exprs = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    exprs += [target["expr"] for panel in json.loads(GRAFANA.read_text())["panels"] for target in panel["targets"]]
    queried = {name for expr in exprs for name in METRIC_NAME.findall(expr)}
    assert "appliance_lease_lost_total" in queried and "appliance_lock_lost_total" not in queried


def test_grafana_dashboard_is_importable_json():
    dashboard = json.loads(GRAFANA.read_text())
    assert dashboard["uid"] and dashboard["title"] and dashboard["schemaVersion"] >= 30
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["targets"] and all(t["expr"] and t["refId"] for t in panel["targets"]), panel["title"]
        assert panel["datasource"]["uid"] == "${datasource}"
