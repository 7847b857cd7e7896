"""Offline replay: the estimators against closed forms and brute force, every strategy on
hand-made vote tables with a fixed ordering, and the vectorised replay against a plain
one-row-at-a-time reference on random data (ties, missing answers and NaNs included)."""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from fractions import Fraction

import numpy as np
import numpy.typing as npt
import pytest

import ponder.bench.replay as replay_module
from ponder.bench.estimators import (
    bootstrap_ci,
    expected_max,
    masked_percentile,
    pass_at_k,
    powers_of_two,
)
from ponder.bench.replay import (
    ReplayData,
    _Arrays,
    _Draws,
    _EarlyStop,
    _Measure,
    _parse,
    _replay_block,
    available_strategies,
    beta_stop_table,
    replay,
)
from ponder.errors import InvalidRequestError
from ponder.strategies.adaptive_consistency import beta_majority_probability
from ponder.strategies.primitives import weighted_vote

FloatArray = npt.NDArray[np.float64]


def make_data(
    groups: Sequence[Sequence[int]],
    group_correct: Sequence[Sequence[bool]],
    *,
    confidence: Sequence[Sequence[float]] | None = None,
    scores: Sequence[Sequence[float]] | None = None,
    tokens: Sequence[Sequence[int]] | None = None,
    latency: Sequence[Sequence[float]] | None = None,
    traces: list[list[npt.NDArray[np.float32]]] | None = None,
) -> ReplayData:
    g = np.asarray(groups, dtype=np.int32)
    right = np.asarray(group_correct, dtype=bool)
    column = np.clip(g, 0, right.shape[1] - 1)  # out-of-range ids are ReplayData's to reject
    correct = (g >= 0) & right[np.arange(g.shape[0])[:, None], column]
    return ReplayData(
        groups=g,
        correct=correct,
        tokens=np.asarray(tokens if tokens is not None else np.full(g.shape, 10), dtype=np.int32),
        latency=np.asarray(latency if latency is not None else np.ones(g.shape), dtype=np.float32),
        confidence=np.asarray(
            confidence if confidence is not None else np.ones(g.shape), dtype=np.float32
        ),
        group_confidence=traces,
        scores={"v": np.asarray(scores, dtype=np.float32)} if scores is not None else {},
        group_correct=right,
    )


def run_fixed(
    data: ReplayData,
    names: Sequence[str],
    sizes: Sequence[int],
    order: npt.ArrayLike | None = None,
) -> dict[str, dict[int, _Measure]]:
    """Strategies on explicit orderings ([orderings * items, samples]; default: as stored)."""
    arrays = _Arrays.of(data)
    if order is None:
        order = np.tile(np.arange(data.samples), (data.items, 1))
    draws = _Draws(arrays, np.asarray(order))
    early = _EarlyStop(data.group_confidence) if data.group_confidence is not None else None
    return _replay_block([_parse(name, data) for name in names], draws, sizes, early)


# --- estimators -----------------------------------------------------------------------------


def exact_pass_at_k(n: int, c: int, k: int) -> Fraction:
    return 1 - Fraction(math.comb(n - c, k), math.comb(n, k))


def test_pass_at_k_matches_the_exact_formula() -> None:
    for n in range(1, 40):
        for k in range(1, n + 1):
            got = pass_at_k(n, np.arange(n + 1), k)
            want = [float(exact_pass_at_k(n, c, k)) for c in range(n + 1)]
            assert got == pytest.approx(want, rel=1e-12, abs=1e-15)


def test_pass_at_k_matches_brute_force_subsets() -> None:
    for n in range(1, 8):
        for c in range(n + 1):
            outcomes = [True] * c + [False] * (n - c)
            for k in range(1, n + 1):
                subsets = list(itertools.combinations(outcomes, k))
                brute = sum(any(s) for s in subsets) / len(subsets)
                assert pass_at_k(n, [c], k)[0] == pytest.approx(brute, abs=1e-12)


def test_pass_at_k_edges_and_errors() -> None:
    assert pass_at_k(64, [0, 64, 63], 2).tolist() == [0.0, 1.0, 1.0]
    assert pass_at_k(5, [1], 1)[0] == pytest.approx(0.2)
    with pytest.raises(InvalidRequestError):
        pass_at_k(4, [1], 5)
    with pytest.raises(InvalidRequestError):
        pass_at_k(4, [5], 1)


def test_beta_stop_table_is_exact() -> None:
    table = beta_stop_table(12)
    assert table.shape == (13, 13)
    assert table[3, 0] == 1 - 0.5**4 == 0.9375  # Beta(4, 1)
    assert table[4, 0] == 1 - 0.5**5
    assert np.diag(table).tolist() == [0.5] * 13
    for v1, v2 in itertools.product(range(13), repeat=2):
        assert table[v1, v2] == beta_majority_probability(v1, v2)
        assert table[v1, v2] + table[v2, v1] == pytest.approx(1.0)


def test_expected_max_matches_brute_force() -> None:
    rng = np.random.default_rng(1)
    values = rng.random((3, 6))
    for k in range(1, 7):
        brute = [np.mean([max(s) for s in itertools.combinations(row, k)]) for row in values]
        assert expected_max(values, k) == pytest.approx(brute, rel=1e-12)


def test_masked_percentile_agrees_with_numpy_bit_for_bit() -> None:
    rng = np.random.default_rng(2)
    values = rng.normal(10, 3, size=(9, 400)).astype(np.float32)
    values[:, :50] = np.round(values[:, :50])  # ties
    valid = rng.random(values.shape) < 0.7
    valid[:, 0] = False
    for q in (0.0, 10.0, 50.0, 90.0, 100.0):
        got = masked_percentile(values, valid, q)
        assert got[0] == -np.inf
        for column in range(1, values.shape[1]):
            picked = values[valid[:, column], column].astype(np.float64).tolist()
            want = np.percentile(picked, q) if picked else -np.inf
            assert got[column] == want


def test_bootstrap_ci_contains_the_mean_and_shrinks_with_more_items() -> None:
    rng = np.random.default_rng(3)
    widths = []
    for items in (40, 400, 4000):
        per_item = (rng.random(items) < 0.6).astype(float)
        low, high = bootstrap_ci(per_item, resamples=1000, seed=0)
        assert low[0] <= per_item.mean() <= high[0]
        widths.append(high[0] - low[0])
    assert widths[0] > widths[1] > widths[2]
    # About 2 * 1.96 * sqrt(p (1 - p) / n) for a proportion.
    assert widths[2] == pytest.approx(2 * 1.96 * math.sqrt(0.24 / 4000), rel=0.15)
    table = rng.random((3, 50))
    low, high = bootstrap_ci(table, resamples=500, seed=7)
    assert low.shape == high.shape == (3,)
    assert (low <= table.mean(axis=1)).all() and (table.mean(axis=1) <= high).all()
    assert bootstrap_ci(table, resamples=500, seed=7)[0].tolist() == low.tolist()


def test_powers_of_two() -> None:
    assert powers_of_two(64) == [1, 2, 4, 8, 16, 32, 64]
    assert powers_of_two(10) == [1, 2, 4, 8, 10]
    assert powers_of_two(1) == [1]


# --- strategies on hand-made tables -----------------------------------------------------------


def correct_at(result: dict[str, dict[int, _Measure]], name: str, n: int) -> list[bool]:
    return [bool(x) for x in result[name][n].correct]


def test_majority_breaks_ties_by_first_seen_in_the_ordering() -> None:
    # Item 0: A B B A -- B reaches 2 first, but A was seen first: A wins the 2-2 tie.
    # Item 1: no answer first, then B: B wins at N = 2.
    data = make_data(
        [[0, 1, 1, 0], [-1, 1, 0, 0]],
        [[True, False], [True, False]],
    )
    result = run_fixed(data, ["majority"], [1, 2, 3, 4])
    assert correct_at(result, "majority", 1) == [True, False]
    assert correct_at(result, "majority", 2) == [True, False]
    assert correct_at(result, "majority", 3) == [False, False]  # B leads 2-1 on item 0
    assert correct_at(result, "majority", 4) == [True, True]  # item 1: 2-1 for A
    # The same samples drawn as B A B A: B is seen first and wins item 0's tie.
    swapped = run_fixed(data, ["majority"], [4], order=[[1, 0, 2, 3], [0, 1, 2, 3]])
    assert correct_at(swapped, "majority", 4) == [False, True]


def test_best_of_n_takes_the_earliest_highest_scored_answered_sample() -> None:
    data = make_data(
        [[0, 1, 0, -1, 1]],
        [[False, True]],
        scores=[[0.2, 0.9, 0.9, 1.0, 0.5]],
    )
    result = run_fixed(data, ["best-of-n:v"], [1, 2, 5])
    assert correct_at(result, "best-of-n:v", 1) == [False]
    assert correct_at(result, "best-of-n:v", 2) == [True]
    # Sample 2 ties sample 1 (0.9): the earlier stays; sample 3 has no answer: never picked.
    assert correct_at(result, "best-of-n:v", 5) == [True]
    later_first = run_fixed(data, ["best-of-n:v"], [5], order=[[2, 1, 0, 3, 4]])
    assert correct_at(later_first, "best-of-n:v", 5) == [False]


def test_weighted_vote_sums_scores_per_group() -> None:
    data = make_data(
        [[0, 1, 1, 2], [0, 1, 1, 2], [0, 1, -1, 1]],
        [[True, False, False]] * 3,
        scores=[[0.9, 0.5, 0.5, 0.1], [0.5, 0.25, 0.25, 0.0], [0.0, 0.0, 1.0, 0.0]],
    )
    result = run_fixed(data, ["weighted-vote:v"], [4])
    # 1.0 beats 0.9; 0.5 ties 0.5 (first seen wins); zero-weight votes still vote and the
    # unanswered 1.0 does not: 0 vs 0, first seen.
    assert correct_at(result, "weighted-vote:v", 4) == [False, True, True]


def test_deepconf_offline_keeps_the_top_eta_percent_by_confidence() -> None:
    data = make_data(
        [[1, 1, 1, 0, 0, -1], [1, 1, 1, 0, 0, -1]],
        [[True, False], [True, False]],
        confidence=[[1, 2, 3, 10, 9, 100], [5, 5, 5, 6, 1, 100]],
    )
    names = ["majority", "deepconf-offline@10", "deepconf-offline@90"]
    result = run_fixed(data, names, [6])
    assert correct_at(result, "majority", 6) == [False, False]
    # Item 0: @10 keeps only 10 (threshold 9.6), @90 drops 1 (threshold 1.4): 19 vs 5.
    # Item 1: @90 drops only the 1 (threshold 2.6): 15 vs 6 for the wrong group; @10 keeps
    # the 6 (threshold 5.6). The unanswered 100 never enters the percentile.
    assert correct_at(result, "deepconf-offline@10", 6) == [True, True]
    assert correct_at(result, "deepconf-offline@90", 6) == [True, False]


def test_adaptive_consistency_stops_where_the_beta_rule_says() -> None:
    tokens = [[3, 1, 4, 1, 5, 9, 2, 6, 5, 3]] * 2
    latency = [[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]] * 2
    data = make_data(
        [[0] * 10, [0, 1, 0, 0, -1, 0, 0, 0, 0, 0]],
        [[True, False]] * 2,
        tokens=tokens,
        latency=latency,
    )
    result = run_fixed(data, ["adaptive-consistency"], [2, 4, 10])
    # Unanimous: 3 votes give Beta(4, 1): 1 - 0.5^4 = 0.9375 < 0.95; 4 votes give
    # 1 - 0.5^5 = 0.96875 -> stops at 4. Item 1 (a dissent and a blank): 5 vs 1 gives 0.9375,
    # 6 vs 1 gives 1 - 9/256 = 0.9648 at the 8th sample.
    at10 = result["adaptive-consistency"][10]
    assert at10.samples is not None and at10.tokens is not None and at10.latency is not None
    assert at10.samples.tolist() == [4, 8]
    assert at10.tokens.tolist() == [sum(tokens[0][:4]), sum(tokens[0][:8])]
    assert at10.latency.tolist() == [10.0, 36.0]  # one sample after another
    assert correct_at(result, "adaptive-consistency", 10) == [True, True]
    capped = result["adaptive-consistency"][4]
    assert capped.samples is not None and capped.samples.tolist() == [4, 4]
    two = result["adaptive-consistency"][2]
    assert two.samples is not None and two.samples.tolist() == [2, 2]
    assert correct_at(result, "adaptive-consistency", 2) == [True, True]  # 1-1 tie: first seen


def test_esc_stops_after_the_first_unanimous_window() -> None:
    latency = [[1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 9]] * 3
    data = make_data(
        [
            [0, 1, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0],
            [-1, -1, -1, -1, 0, 1, 0, 0, 0, 0, 0, 0],
            [1, 1, 0, 0, 1, 0, 1, 0, 1, 0, 0, 1],
        ],
        [[True, False]] * 3,
        latency=latency,
    )
    result = run_fixed(data, ["esc"], [2, 4, 8, 12])
    at12 = result["esc"][12]
    assert at12.samples is not None and at12.latency is not None
    # Item 0: window 2 is unanimous for B -> 8 samples, B leads 5-3. Item 1: a blank window
    # is no stop; window 3 is. Item 2: never unanimous, all 12 drawn, 6-6 tie -> first seen B.
    assert at12.samples.tolist() == [8, 12, 12]
    assert correct_at(result, "esc", 12) == [False, True, False]
    assert at12.latency.tolist() == [4.0 + 8.0, 4.0 + 8.0 + 9.0, 21.0]  # window maxima add up
    at2 = result["esc"][2]
    assert at2.samples is not None and at2.samples.tolist() == [2, 2, 2]  # a window of N
    at4 = result["esc"][4]
    assert at4.samples is not None and at4.samples.tolist() == [4, 4, 4]


def online_data(*, traces: bool) -> ReplayData:
    # Warm-up [1, 10, 10, 10] -> s = 1 + 0.3 * 9 = 3.7; the 1 is dropped: A 10, B 20 (67 %).
    # Sample 4 (conf 2 < s) is cut where its trace first drops below 3.7: position 2.
    # Sample 5 (B, 1000) gives B 1020 / 1030 >= 95 % with 3 voters: stop after 6 samples.
    group_trace = [np.asarray(t, dtype=np.float32) for t in ([5] * 10,) * 4]
    group_trace.append(np.asarray([5, 4, 3, 2, 2, 2, 2, 2, 2, 2], dtype=np.float32))
    group_trace += [np.full(10, 9.0, dtype=np.float32) for _ in range(3)]
    return make_data(
        [[0, 0, 1, 1, 0, 1, 0, 0]],
        [[False, True]],
        confidence=[[1, 10, 10, 10, 2, 1000, 10, 10]],
        latency=[[1, 2, 3, 4, 10, 5, 1, 1]],
        traces=[group_trace] if traces else None,
    )


def test_deepconf_online_cuts_low_confidence_traces_and_stops_at_consensus() -> None:
    result = run_fixed(online_data(traces=True), ["deepconf-online"], [1, 2, 8])
    at8 = result["deepconf-online"][8]
    assert at8.samples is not None and at8.tokens is not None and at8.latency is not None
    assert at8.samples.tolist() == [6]
    assert at8.tokens.tolist() == [4 * 10 + 3 + 10]
    # Warm-up in parallel (4 s), then one round: the cut trace's 10 s scaled by 3/10, and 5 s.
    assert at8.latency.tolist() == [4.0 + 5.0]
    assert correct_at(result, "deepconf-online", 8) == [True]
    # N = 2: a warm-up of two; the less confident is below the 10th percentile and drops out.
    assert correct_at(result, "deepconf-online", 2) == [False]
    assert correct_at(result, "deepconf-online", 1) == [False]


def test_deepconf_online_without_traces_counts_stopped_traces_in_full() -> None:
    data = online_data(traces=False)
    at8 = run_fixed(data, ["deepconf-online"], [8])["deepconf-online"][8]
    assert at8.tokens is not None and at8.tokens.tolist() == [4 * 10 + 10 + 10]
    rows = replay(data, orderings=2, ns=[8], strategies=["deepconf-online", "majority"])
    assert rows[0].note is not None and "full length" in rows[0].note
    assert rows[1].note is None


def test_early_stop_index_is_exact_at_the_threshold() -> None:
    traces = [
        [np.asarray([3.0, 2.0, 2.5, 1.0], dtype=np.float32), np.zeros(0, dtype=np.float32)],
        [np.asarray([0.1, 0.3, np.nan], dtype=np.float32), np.asarray([-0.0, 5.0], np.float32)],
    ]
    index = _EarlyStop(traces)
    trace = np.array([0, 0, 0, 0, 1, 2, 2, 3, 3])
    just_above = np.nextafter(float(np.float32(0.1)), 1.0)
    threshold = np.array([2.0, 2.0000001, 0.5, 3.5, 1.0, 0.1, just_above, 0.0, 1e-9])
    tokens = np.full(trace.size, 50, dtype=np.int64)
    got = index.tokens_until_below(trace, threshold, tokens)
    # 2.0 is not below 2.0 (-> the 1.0 at position 3); 2.0000001 > float32(2.0) -> position 1;
    # nothing is below 0.5 (all 50 tokens); an empty trace never drops. float32(0.1) is above
    # 0.1 (float64) but below the next float64 up; NaN never stops; -0.0 is not below 0.0.
    assert got.tolist() == [4, 2, 50, 1, 50, 50, 1, 50, 1]


# --- the vectorised replay against a one-row-at-a-time reference ------------------------------


def ref_vote(groups: list[int], weights: list[float], voters: list[bool]) -> int:
    answers = [str(g) if v and g >= 0 else None for g, v in zip(groups, voters, strict=True)]
    winner, _ = weighted_vote(answers, weights)
    return -1 if winner is None else int(winner)


def ref_share(groups: list[int], weights: list[float], voters: list[bool]) -> float:
    answers = [str(g) if v and g >= 0 else None for g, v in zip(groups, voters, strict=True)]
    winner, table = weighted_vote(answers, weights)
    total = sum(table.values())
    return table[winner] / total if winner is not None and total > 0 else 0.0


class Reference:
    """Each strategy written the obvious way, for one item and one ordering."""

    def __init__(self, data: ReplayData, item: int, order: Sequence[int]) -> None:
        self.data = data
        self.order = list(order)
        i = item
        self.item = i
        self.groups = [int(data.groups[i, j]) for j in order]
        self.ok = [bool(data.correct[i, j]) for j in order]
        self.tokens = [int(data.tokens[i, j]) for j in order]
        self.latency = [float(data.latency[i, j]) for j in order]
        self.conf = [float(data.confidence[i, j]) for j in order]
        self.scores = [float(np.nan_to_num(data.scores["v"][i, j])) for j in order]

    def graded(self, group: int) -> bool:
        return group >= 0 and bool(self.data.group_correct[self.item, group])

    def majority(self, n: int) -> bool:
        return self.graded(ref_vote(self.groups[:n], [1.0] * n, [True] * n))

    def best_of_n(self, n: int) -> bool:
        best, pick = -math.inf, None
        for k in range(n):
            if self.groups[k] >= 0 and self.scores[k] > best:
                best, pick = self.scores[k], k
        return pick is not None and self.ok[pick]

    def weighted(self, n: int) -> bool:
        return self.graded(ref_vote(self.groups[:n], self.scores[:n], [True] * n))

    def offline(self, n: int, eta: float) -> bool:
        eligible = [self.groups[k] >= 0 and not math.isnan(self.conf[k]) for k in range(n)]
        pool = [c for c, e in zip(self.conf[:n], eligible, strict=True) if e]
        threshold = float(np.percentile(pool, 100 - eta)) if pool else -math.inf
        voters = [e and c >= threshold for c, e in zip(self.conf[:n], eligible, strict=True)]
        return self.graded(ref_vote(self.groups[:n], self.conf[:n], voters))

    def online(self, n: int) -> tuple[bool, int, float, int]:
        warmup = min(4, n)
        valid = [c for c in self.conf[:warmup] if not math.isnan(c)]
        s = float(np.percentile(valid, 10)) if valid else -math.inf
        voters = [self.groups[k] >= 0 and self.conf[k] >= s for k in range(warmup)]
        groups, weights = self.groups[:warmup], self.conf[:warmup]
        tokens = sum(self.tokens[:warmup])
        latency = max(self.latency[:warmup])
        rounds: list[float] = []
        used = warmup

        def decisive() -> bool:
            return sum(voters) >= 2 and ref_share(groups, weights, voters) >= 0.95

        while used < n and not decisive():
            k = used
            spent, seconds = self.tokens[k], self.latency[k]
            if self.conf[k] < s and self.data.group_confidence is not None:
                trace = self.data.group_confidence[self.item][self.order[k]]
                below = [p for p, value in enumerate(trace) if value < s]
                if below:
                    kept = min(below[0] + 1, spent)
                    seconds = seconds * kept / spent if spent else seconds
                    spent = kept
            if (k - warmup) % 4 == 0:
                rounds.append(0.0)
            rounds[-1] = max(rounds[-1], seconds)
            tokens += spent
            groups, weights = [*groups, self.groups[k]], [*weights, self.conf[k]]
            voters = [*voters, self.groups[k] >= 0 and self.conf[k] >= s]
            used += 1
        winner = ref_vote(groups, weights, voters)
        return self.graded(winner), tokens, latency + sum(rounds), used

    def adaptive(self, n: int) -> tuple[bool, int, float, int]:
        used = n
        for k in range(n):
            counts = sorted(
                (self.groups[: k + 1].count(g) for g in set(self.groups[: k + 1]) if g >= 0),
                reverse=True,
            )
            v1, v2 = ([*counts, 0, 0])[:2]
            if beta_majority_probability(v1, v2) >= 0.95:
                used = k + 1
                break
        return self.majority(used), sum(self.tokens[:used]), sum(self.latency[:used]), used

    def esc(self, n: int) -> tuple[bool, int, float, int]:
        window = min(4, n)
        used, latency = n, 0.0
        for start in range(0, n, window):
            drawn = self.groups[start : min(start + window, n)]
            latency += max(self.latency[start : start + len(drawn)])
            if all(g >= 0 for g in drawn) and len(set(drawn)) == 1:
                used = start + len(drawn)
                break
        return self.majority(used), sum(self.tokens[:used]), latency, used


def random_data(seed: int, items: int = 6, samples: int = 9) -> ReplayData:
    """Small integers everywhere, so that vote weights tie often and sum exactly."""
    rng = np.random.default_rng(seed)
    shape = (items, samples)
    groups = rng.integers(-1, 3, size=shape)
    group_correct = rng.random((items, 3)) < 0.4
    confidence = rng.integers(1, 8, size=shape).astype(np.float32)
    confidence[rng.random(shape) < 0.1] = np.nan
    scores = rng.integers(0, 5, size=shape) / 4
    scores[rng.random(shape) < 0.1] = np.nan
    tokens = rng.integers(0, 12, size=shape)
    traces = [
        [rng.integers(0, 9, size=rng.integers(0, 12)).astype(np.float32) for _ in range(samples)]
        for _ in range(items)
    ]
    return make_data(
        groups.tolist(),
        group_correct.tolist(),
        confidence=confidence.tolist(),
        scores=scores.tolist(),
        tokens=tokens.tolist(),
        latency=(rng.integers(1, 9, size=shape) / 2).tolist(),
        traces=traces,
    )


@pytest.mark.parametrize(("seed", "samples"), [(0, 9), (1, 9), (2, 9), (3, 16), (4, 16)])
def test_vectorised_replay_matches_the_reference(seed: int, samples: int) -> None:
    data = random_data(seed, samples=samples)
    orderings = 5
    rng = np.random.default_rng(100 + seed)
    order = np.stack([rng.permutation(data.samples) for _ in range(orderings * data.items)])
    sizes = sorted({1, 2, 3, 4, 5, 8, samples})
    names = [name for name in available_strategies(data) if name != "pass@k"]
    result = run_fixed(data, names, sizes, order)
    for row, permutation in enumerate(order):
        ref = Reference(data, row % data.items, permutation.tolist())
        for n in sizes:
            simple = {
                "majority": ref.majority(n),
                "best-of-n:v": ref.best_of_n(n),
                "weighted-vote:v": ref.weighted(n),
                "deepconf-offline@10": ref.offline(n, 10),
                "deepconf-offline@90": ref.offline(n, 90),
            }
            for name, want in simple.items():
                assert bool(result[name][n].correct[row]) == want, (name, n, row)
            adaptive = {
                "deepconf-online": ref.online(n),
                "adaptive-consistency": ref.adaptive(n),
                "esc": ref.esc(n),
            }
            for name, (ok, tokens, latency, used) in adaptive.items():
                measure = result[name][n]
                assert measure.tokens is not None and measure.latency is not None
                assert measure.samples is not None
                got = (
                    bool(measure.correct[row]),
                    int(measure.tokens[row]),
                    int(measure.samples[row]),
                )
                assert got == (ok, tokens, used), (name, n, row)
                assert measure.latency[row] == pytest.approx(latency), (name, n, row)


# --- the public entry point -------------------------------------------------------------------


def test_full_budget_with_one_ordering_equals_the_direct_computation() -> None:
    rng = np.random.default_rng(5)
    items, samples = 30, 8
    # A strict plurality per item (4 of 8 for one group), so the order cannot matter at N = S.
    groups = np.array([rng.permutation([0, 0, 0, 0, 1, 1, 2, -1]) for _ in range(items)])
    group_correct = rng.random((items, 3)) < 0.5
    scores = rng.permutation(np.arange(items * samples)).reshape(items, samples) / (items * samples)
    data = make_data(groups.tolist(), group_correct.tolist(), scores=scores.tolist())
    rows = replay(
        data,
        orderings=1,
        ns=[samples],
        strategies=["majority", "best-of-n:v", "pass@k"],
        seed=9,
    )
    by_name = {row.strategy: row for row in rows}
    assert by_name["majority"].accuracy == pytest.approx(group_correct[:, 0].mean())
    best = np.where(groups >= 0, scores, -1).argmax(axis=1)
    assert by_name["best-of-n:v"].accuracy == pytest.approx(
        data.correct[np.arange(items), best].mean()
    )
    assert by_name["pass@k"].accuracy == pytest.approx(data.correct.any(axis=1).mean())
    for row in rows:
        assert row.n == samples and row.samples == samples
        assert row.tokens == pytest.approx(10 * samples)
        assert row.latency_s == pytest.approx(1.0)
        assert row.ci_low <= row.accuracy <= row.ci_high


def test_replay_rows_are_tidy_and_deterministic() -> None:
    data = random_data(11, items=20, samples=8)
    rows = replay(data, orderings=7, seed=3, bootstrap=200)
    names = available_strategies(data)
    assert [(r.strategy, r.n) for r in rows] == [(s, n) for s in names for n in [1, 2, 4, 8]]
    assert rows == replay(data, orderings=7, seed=3, bootstrap=200)
    for row in rows:
        assert 0.0 <= row.ci_low <= row.accuracy <= row.ci_high <= 1.0
        assert 1 <= row.samples <= row.n
        assert row.tokens >= 0 and row.latency_s > 0
    by_key = {(r.strategy, r.n): r for r in rows}
    # One sample: every strategy answers with it (pass@1 is its exact expectation).
    ones = {by_key[s, 1].accuracy for s in ("majority", "esc", "adaptive-consistency")}
    assert len(ones) == 1
    assert by_key["pass@k", 1].accuracy == pytest.approx(float(data.correct.mean()))


def test_blocks_of_orderings_do_not_change_the_result(monkeypatch: pytest.MonkeyPatch) -> None:
    data = random_data(12, items=10, samples=8)
    whole = replay(data, orderings=9, seed=1, bootstrap=50)
    monkeypatch.setattr(replay_module, "CHUNK_ELEMENTS", 2 * data.items * data.samples)
    blocked = replay(data, orderings=9, seed=1, bootstrap=50)
    for a, b in zip(whole, blocked, strict=True):
        assert a.strategy == b.strategy and a.n == b.n
        assert a.accuracy == pytest.approx(b.accuracy)
        assert a.tokens == pytest.approx(b.tokens)
        assert a.latency_s == pytest.approx(b.latency_s)
        assert a.samples == pytest.approx(b.samples)


def test_unknown_strategy_lists_the_available_ones() -> None:
    data = random_data(0)
    with pytest.raises(InvalidRequestError, match="available: majority, best-of-n:v"):
        replay(data, strategies=["majority", "tree-of-thought"])
    with pytest.raises(InvalidRequestError, match="unknown strategy 'best-of-n:judge'"):
        replay(data, strategies=["best-of-n:judge"])
    with pytest.raises(InvalidRequestError):
        replay(data, strategies=["deepconf-offline@0"])
    rows = replay(data, orderings=2, ns=[4], strategies=["deepconf-offline@50"], bootstrap=10)
    assert rows[0].strategy == "deepconf-offline@50"


def test_bad_requests_and_data_are_rejected() -> None:
    data = random_data(0)
    with pytest.raises(InvalidRequestError, match=r"1\.\.9"):
        replay(data, ns=[0, 2])
    with pytest.raises(InvalidRequestError, match=r"1\.\.9"):
        replay(data, ns=[10])
    with pytest.raises(InvalidRequestError, match="orderings"):
        replay(data, orderings=0)
    with pytest.raises(InvalidRequestError, match="group ids"):
        make_data([[0, 3]], [[True, False]])
    with pytest.raises(InvalidRequestError, match="confidence"):
        make_data([[0, 1]], [[True, False]], confidence=[[1.0, -1.0]])
    with pytest.raises(InvalidRequestError, match=r"scores\['v'\]"):
        make_data([[0, 1]], [[True, False]], scores=[[0.5, 1.5]])
    with pytest.raises(InvalidRequestError, match="shape"):
        ReplayData(
            groups=np.zeros((2, 3), dtype=np.int32),
            correct=np.zeros((2, 2), dtype=bool),
            tokens=np.zeros((2, 3), dtype=np.int32),
            latency=np.zeros((2, 3), dtype=np.float32),
            confidence=np.zeros((2, 3), dtype=np.float32),
            group_confidence=None,
            scores={},
            group_correct=np.zeros((2, 1), dtype=bool),
        )
