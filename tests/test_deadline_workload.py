"""The deadline workload (`benchmarks/deadline_workload.py`) runs end to end on a tiny workload with
SmolLM2 and reports consistent numbers. Whether 95 % meet the deadline is not asserted: that needs
a quiet machine and the real workload, which a test suite cannot promise."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import TEST_HOME

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "deadline_workload.py"


@pytest.mark.model
def test_a_tiny_workload_reports_its_numbers(smollm2_path: Path) -> None:
    tiny = ["--model", "smollm2-135m", "--items", "2", "--n", "2", "--max-tokens", "24"]
    tiny += ["--deadline", "30", "--concurrency", "2", "--threads", "1", "--target", "0"]
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *tiny, "--json"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PONDER_HOME": str(TEST_HOME)},
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    assert found["requests"] == 2 and len(found["per_request"]) == 2
    assert sum(found["stopped_by"].values()) == 2
    within = [r["within"] for r in found["per_request"]]
    assert found["within_deadline"] == sum(within) / 2
    latencies = sorted(r["latency_s"] for r in found["per_request"])
    assert latencies[0] <= found["latency_p50_s"] <= found["latency_p95_s"] <= latencies[-1]
    per_1000 = found["per_1000_questions"]
    assert per_1000["requests"] == 1000 and per_1000["usd"] > 0
    assert per_1000["samples"] == pytest.approx(2000)  # n=2 for every question
    assert 0 <= found["accuracy"] <= found["answered"] <= 1
