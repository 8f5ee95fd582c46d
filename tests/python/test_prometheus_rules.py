"""The Prometheus rules of deploy/prometheus: promtool's syntax and lint check, promtool's unit
tests (deploy/prometheus/tests/*.yml), and a real Prometheus loading them and evaluating them
on remote-written span metrics."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest

from prometheus import RemoteSeries

REPO = Path(__file__).resolve().parents[2]
RULES_DIR = REPO / "deploy" / "prometheus"
RULE_FILES = sorted(RULES_DIR.glob("*.rules.yml"))
TEST_FILES = sorted((RULES_DIR / "tests").glob("*.yml"))


def _promtool(*args: str) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("promtool not found on PATH (scripts/test installs Debian's prometheus package)")
    r = subprocess.run([promtool, *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"promtool {' '.join(args)} exited with {r.returncode}\n{r.stdout}\n{r.stderr}"


def test_rule_files_exist():
    names = {p.name for p in RULE_FILES}
    assert {"spoor-recording.rules.yml", "spoor-slo-alerts.rules.yml", "spoor-slo-objectives.rules.yml"} <= names
    assert "spoor-health-alerts.rules.yml" in names
    assert len(TEST_FILES) >= 4, TEST_FILES


def test_promtool_check_rules():
    _promtool("check", "rules", *(str(p.relative_to(REPO)) for p in RULE_FILES))


@pytest.mark.parametrize("test_file", TEST_FILES, ids=lambda p: p.name)
def test_promtool_test_rules(test_file: Path):
    _promtool("test", "rules", str(test_file.relative_to(REPO)))


def test_rules_load_and_evaluate_in_prometheus(prometheus_factory):
    """The rules as a real Prometheus loads them: every group healthy, and the SLIs computed from
    remote-written span metrics (an error ratio of 2/100 and a slow ratio of 4/100)."""
    prom = prometheus_factory(rule_files=RULE_FILES, evaluation_interval="1s")
    now_ms = int(time.time() * 1000)
    base = {"service": "checkout", "span_name": "GET /cart", "span_kind": "SPAN_KIND_SERVER"}

    def counter(name: str, labels: dict[str, str], per_min: float) -> RemoteSeries:
        # 11 samples, one a minute, ending now: a counter growing by per_min a minute.
        return RemoteSeries(
            {"__name__": name, **base, **labels},
            [(per_min * i, now_ms - (10 - i) * 60_000) for i in range(11)],
        )

    prom.remote_write(
        [
            counter("traces_spanmetrics_calls_total", {"status_code": "STATUS_CODE_UNSET"}, 98),
            counter("traces_spanmetrics_calls_total", {"status_code": "STATUS_CODE_ERROR"}, 2),
            counter("traces_spanmetrics_latency_bucket", {"status_code": "STATUS_CODE_UNSET", "le": "0.256"}, 96),
            counter("traces_spanmetrics_latency_bucket", {"status_code": "STATUS_CODE_UNSET", "le": "+Inf"}, 100),
            counter("traces_spanmetrics_latency_count", {"status_code": "STATUS_CODE_UNSET"}, 100),
        ]
    )

    def close_to(expected: float):
        return lambda r: len(r) == 1 and abs(float(r[0]["value"][1]) - expected) < 1e-9

    errors = prom.wait_for("service:spoor_server_span_errors:ratio_rate5m", close_to(0.02), timeout=30)
    assert errors[0]["metric"] == {"__name__": "service:spoor_server_span_errors:ratio_rate5m", "service": "checkout"}
    prom.wait_for("service:spoor_server_spans_slow:ratio_rate5m", close_to(0.04), timeout=30)
    prom.wait_for("service:spoor_slo_error_budget:ratio", close_to(0.001), timeout=30)

    groups = prom.rules()
    expected = {"spoor-slo-objectives", "spoor-sli-recording", "spoor-slo-alerts", "spoor-health"}
    assert {g["name"] for g in groups} == expected
    for g in groups:
        for rule in g["rules"]:
            assert rule["health"] != "err", f"{g['name']}/{rule['name']}: {rule.get('lastError')}"
