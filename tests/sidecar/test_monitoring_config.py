"""``config/prometheus/alerts.yml`` (``promtool check rules`` and ``promtool test rules``), the scrape
configuration ``config/prometheus/prometheus.yml`` (``promtool check config``) and ``config/grafana/appliance.json``:
valid, every metric they query is one the appliance exposes, and what they must agree on with the appliance."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import yaml
from prometheus_client.metrics import MetricWrapperBase

from appliance.kernel.contract.packs import load_settings
from appliance.kernel.runtime import metrics as worker_metrics
from appliance.kernel.runtime.metrics import Lazy
from appliance.packs.knowledge import metrics as knowledge_metrics
from appliance.sidecar.server import options
from tests.conftest import _require
from tests.kustomize import KUBERNETES, build, only
from tests.sidecar.test_metrics import samples
from tests.worker.harness import REPO

PROMETHEUS = REPO / "config" / "prometheus"
GRAFANA = REPO / "config" / "grafana" / "appliance.json"
METRIC_NAME = re.compile(r"\bappliance_[a-z_]+\b")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


def promtool(*args: str, cwd=PROMETHEUS) -> str:
    _require("promtool")
    result = subprocess.run([shutil.which("promtool") or "promtool", *args], capture_output=True, text=True, timeout=60,
                            cwd=cwd)
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


def test_the_scrape_configuration_passes_promtool_with_the_rules_it_loads(tmp_path):
    """Debian's promtool is built without Kubernetes service discovery and rejects its field: the file is checked
    without that job (which the next test checks against the Deployment)."""
    scrape = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    scrape["scrape_configs"] = [job for job in scrape["scrape_configs"] if "kubernetes_sd_configs" not in job]
    assert scrape["scrape_configs"] and scrape["rule_files"] == ["alerts.yml"]
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(scrape))
    shutil.copy(PROMETHEUS / "alerts.yml", tmp_path / "alerts.yml")
    assert "SUCCESS" in promtool("check", "config", "prometheus.yml", cwd=tmp_path)


def test_every_scrape_job_reads_the_sidecars_metrics_and_keeps_the_appliances_job_label():
    """The appliance labels its metrics with ``job`` (the appliance's job); Prometheus renames a scraped ``job``
    to ``exported_job`` unless the scrape honours it, and every ``by (job)`` of the rules and the dashboard
    would then group by the scrape job instead."""
    assert "job" in worker_metrics.JOB_RUNS._labelnames
    jobs = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())["scrape_configs"]
    assert len(jobs) == 2
    for job in jobs:
        assert job["metrics_path"] == "/metrics/prometheus" and job["honor_labels"] is True, job["job_name"]
    (pods,) = [job for job in jobs if "kubernetes_sd_configs" in job]
    keep = {rule["source_labels"][0]: rule["regex"] for rule in pods["relabel_configs"] if rule.get("action") == "keep"}
    pod = only(build(KUBERNETES), "Deployment")["spec"]["template"]
    assert keep["__meta_kubernetes_pod_label_app"] == pod["metadata"]["labels"]["app"]
    (port,) = [p for p in pod["spec"]["containers"][0]["ports"] if p["name"] == keep[
        "__meta_kubernetes_pod_container_port_name"]]
    assert [f"0.0.0.0:{port['containerPort']}"] == options(load_settings({}, env_file=None))["bind"]


def test_the_dashboard_plots_runs_in_progress_by_job():
    dashboard = json.loads(GRAFANA.read_text())
    exprs = {target["expr"]: panel for panel in dashboard["panels"] for target in panel["targets"]}
    panels = [panel for expr, panel in exprs.items() if "appliance_job_running" in expr and "by (job)" in expr]
    assert len(panels) == 1 and panels[0]["title"] == "Runs in progress by job"
