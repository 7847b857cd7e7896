"""`benchmarks/auto_settings.py` cross-fits every candidate setting on a run and picks by its
stated rule: the most accurate within the token share."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.plan_runs import mix, write_store

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "auto_settings.py"


def test_every_candidate_is_cross_fitted_and_the_pick_follows_the_rule(tmp_path: Path) -> None:
    run = write_store(tmp_path / "run.db", mix(easy=6, hard=6, hopeless=8))
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(run), "--seeds", "2", "--orderings", "4", "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout)
    results = found["results"]
    assert len(results) == 14 and len({r["name"] for r in results}) == 14
    # Self-consistency at its best N on the same items: the easy and the hard ones are right.
    assert {r["reference"] for r in results} == {0.6}
    for r in results:
        assert len(r["per_seed"]) == 2
        assert r["accuracy"] == pytest.approx(sum(a for a, _ in r["per_seed"]) / 2)
        # Easy and hopeless questions stop early under every setting: fewer tokens than N = 16.
        assert 0 < r["token_share"] < 1
    within = [r for r in results if r["token_share"] <= 0.5]
    assert within, "some setting spends at most half the tokens on this mix"
    best = max(within, key=lambda r: (r["accuracy"], -r["token_share"]))
    assert found["pick"] == best["name"]


def test_only_keeps_the_named_candidates(tmp_path: Path) -> None:
    run = write_store(tmp_path / "run.db", mix(easy=4, hard=4, hopeless=4))
    base = [sys.executable, str(SCRIPT), str(run), "--seeds", "1", "--orderings", "2", "--json"]
    done = subprocess.run(
        [*base, "--only", "probe 3, rereads 6,12, confidence x2"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    names = [r["name"] for r in json.loads(done.stdout)["results"]]
    assert names == [
        "probe 3, rereads 6,12, confidence x2, match 1",
        "probe 3, rereads 6,12, confidence x2, budget-share 0.5",
    ]
    none = subprocess.run([*base, "--only", "nope"], capture_output=True, text=True, timeout=300)
    assert none.returncode == 2 and "no candidate's name contains 'nope'" in none.stderr
