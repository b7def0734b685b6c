"""The ``model`` tag of the provider's metrics stays bounded whatever model names tasks send.

With ``check_capabilities=False`` any text can be a model name; each distinct tag value is a new
series in the metrics backend. The metrics module is run in an Airflow process whose StatsD client
sends to a UDP socket of this test (as in tests/integration/test_observability.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from airflow_provider_kling.catalog import MODEL_ALIASES
from tests.support.statsd import StatsdListener, kling_metrics

ROOT = Path(__file__).resolve().parents[2]
KNOWN = "kling-video/v1/standard/image-to-video"

_CHILD = r"""
import sys
from airflow_provider_kling import metrics

known, alias = sys.argv[1], sys.argv[2]
for n in range(50):  # fifty made-up names, as a templated model field could send
    metrics.incr(metrics.SUBMITTED, f"acme/video-{n}-" + "x" * 300)
    metrics.credits({"credits_used": 10}, f"acme/video-{n}")
metrics.incr(metrics.SUBMITTED, "kling-video/v1/standard/image-to-video,outcome=forged")
metrics.finished("completed", "../../etc/passwd", 1.0, 2.0)
metrics.incr(metrics.SUBMITTED, known)
metrics.incr(metrics.SUBMITTED, alias)
metrics.incr(metrics.REUSED, None)
print("sent")
"""


def test_models_outside_the_catalog_share_one_model_tag() -> None:
    listener = StatsdListener()
    alias, aliased = next(iter(MODEL_ALIASES.items()))
    try:
        env = {
            **os.environ,
            "AIRFLOW__METRICS__STATSD_ON": "True",
            "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
            "AIRFLOW__METRICS__STATSD_PORT": str(listener.port),
            # Tags travel in the metric name (InfluxDB line style), so the test can read them.
            "AIRFLOW__METRICS__STATSD_INFLUXDB_ENABLED": "True",
        }
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, KNOWN, alias],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
            check=False,
        )
        assert proc.returncode == 0, proc.stderr[-3000:]
        deadline = time.monotonic() + 5
        while len(kling_metrics(listener.packets)) < 106 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        listener.close()

    metrics = kling_metrics(listener.packets)
    assert len(metrics) == 106
    for _, tags, _ in metrics:
        assert set(tags) <= {"model", "outcome"}
    models = sorted({tags["model"] for _, tags, _ in metrics})
    assert models == sorted({"other", "unknown", KNOWN, aliased})
    credits = [(tags["model"], value) for name, tags, value in metrics if name == "kling.credits_used"]
    assert credits == [("other", "10|c")] * 50
    finished = [tags for name, tags, _ in metrics if name == "kling.generations.finished"]
    assert finished == [{"model": "other", "outcome": "completed"}]
