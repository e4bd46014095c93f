"""Metrics are made on their first use, and the kind of value (one process, or prometheus_client's multiprocess
files) is chosen then: importing the modules, or prometheus_client itself, before the entry point has set
``PROMETHEUS_MULTIPROC_DIR`` changes nothing. A fresh interpreter, as an entry point would be."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]

PROGRAM = """
import os, sys
import prometheus_client                      # imported first, with no directory set
import appliance.sdk                          # every job module may import it early
from appliance.kernel.runtime import metrics
assert "prometheus_client.values" in sys.modules
os.environ["PROMETHEUS_MULTIPROC_DIR"] = sys.argv[1]   # what use_metrics_dir does, later
metrics.JOB_RUNS.labels("tick", "success").inc()
print(type(metrics.JOB_RUNS.get()._metrics[("tick", "success")]._value).__name__)
"""


def test_the_first_metric_after_the_directory_writes_to_it(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir")}
    done = subprocess.run([sys.executable, "-c", PROGRAM, str(tmp_path)], env={**env, "PYTHONPATH": str(REPO)},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "MmapedValue"
    assert [p.name for p in tmp_path.glob("counter_*.db")], list(tmp_path.iterdir())
