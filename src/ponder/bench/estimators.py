"""Closed-form estimators behind offline replay (`ponder.bench.replay`): pass@k, the
Adaptive-Consistency stopping table, the expected cost of n parallel samples, a percentile that
mirrors NumPy's, and a bootstrap confidence interval over items.

They are pure and vectorised so that replay never loops over items, and exact where an exact
answer is cheap, so that small differences between strategies are not estimator noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from ponder.errors import InvalidRequestError

FloatArray = npt.NDArray[np.float64]


def pass_at_k(n: int, correct: npt.ArrayLike, k: int) -> FloatArray:
    """The unbiased pass@k (Chen et al. 2021) per item: the chance that at least one of k samples
    drawn without replacement from n, of which `correct` are right, is right,
    ``1 - C(n - c, k) / C(n, k)``.

    The ratio is the product form ``prod_{t = n - c + 1}^{n} (1 - k / t)``: no huge binomials and
    no cancellation, so it is accurate to a few ulps for any n. One cumulative product serves
    every c at once (the factor t = k is 0, which makes pass@k = 1 whenever n - c < k)."""
    if not 1 <= k <= n:
        raise InvalidRequestError(f"pass@k needs 1 <= k <= n, got k={k}, n={n}")
    c = np.asarray(correct, dtype=np.int64)
    if c.size and (c.min() < 0 or c.max() > n):
        raise InvalidRequestError(f"correct counts must lie in 0..{n}")
    factors = 1.0 - k / np.arange(n, 0, -1, dtype=np.float64)  # t = n, n - 1, ..., 1
    ratio = np.concatenate(([1.0], np.cumprod(factors)))  # ratio[c] = C(n - c, k) / C(n, k)
    return np.asarray(1.0 - ratio[c], dtype=np.float64)


def beta_stop_table(max_votes: int) -> FloatArray:
    """P[v1, v2] = P(X > 1/2) for X ~ Beta(v1 + 1, v2 + 1), for 0 <= v1, v2 <= max_votes: the
    Adaptive-Consistency posterior probability (Aggarwal et al. 2023) that the answer with v1
    votes is more likely than the one with v2. Replay compares it with the stopping confidence
    after every sample, so it is tabulated once.

    Exact in integers: for integer a, b, P(Beta(a, b) > 1/2) = P(Binomial(a + b - 1, 1/2) < a),
    a sum of binomial coefficients over 2^(a + b - 1), divided once (Python's int / int rounds
    correctly). E.g. Beta(4, 1): 1 - 0.5^4 = 0.9375."""
    if max_votes < 0:
        raise InvalidRequestError(f"max_votes must be non-negative, got {max_votes}")
    size = max_votes + 1
    table = np.empty((size, size), dtype=np.float64)
    for trials in range(1, 2 * max_votes + 2):  # v1 + v2 + 1
        prefix, binomial = 0, 1  # sum of C(trials, j) for j <= v1; C(trials, v1)
        denominator = 1 << trials
        for v1 in range(min(trials, size)):
            prefix += binomial
            binomial = binomial * (trials - v1) // (v1 + 1)
            v2 = trials - 1 - v1
            if v2 < size:
                table[v1, v2] = prefix / denominator
    return table


def expected_max(values: npt.ArrayLike, k: int) -> FloatArray:
    """Per row, the expected maximum of a uniformly random k-subset of the row's values: what n
    samples decoded in parallel wait for (the slowest), averaged over every way of drawing them.

    With the row sorted ascending, x_(j) is the maximum of C(j - 1, k - 1) of the C(S, k)
    subsets, so the expectation is one dot product with exact weights."""
    rows = np.asarray(values, dtype=np.float64)
    if rows.ndim != 2:
        raise InvalidRequestError("expected_max needs a 2-D array (rows x samples)")
    size = rows.shape[1]
    if not 1 <= k <= size:
        raise InvalidRequestError(f"expected_max needs 1 <= k <= {size}, got {k}")
    total = math.comb(size, k)
    weights = np.array([math.comb(j, k - 1) / total for j in range(size)], dtype=np.float64)
    return np.asarray(np.sort(rows, axis=1) @ weights, dtype=np.float64)


def masked_percentile(values: npt.ArrayLike, valid: npt.ArrayLike, q: float) -> FloatArray:
    """Column-wise `np.percentile(values[valid], q)` (see `masked_percentiles`)."""
    return np.asarray(masked_percentiles(values, valid, [q])[0], dtype=np.float64)


def masked_percentiles(
    values: npt.ArrayLike, valid: npt.ArrayLike, qs: Sequence[float]
) -> FloatArray:
    """[len(qs), columns]: for each column of `values` ([rows, columns]), the linear-interpolated
    percentiles `np.percentile(column[valid], q)` of its valid entries; -inf where it has none.

    DeepConf's threshold is a percentile over the traces that can vote, and how many those are
    differs per (ordering, item); NumPy's nanpercentile would loop over columns in Python, this
    sorts once for every q. The interpolation copies NumPy's (`_lerp`), so thresholds agree bit
    for bit and a trace exactly at the threshold is kept or dropped as the live strategy would."""
    x = np.asarray(values)
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float64)
    mask = np.asarray(valid, dtype=bool)
    if x.shape != mask.shape or x.ndim != 2:
        raise InvalidRequestError("values and valid must be 2-D arrays of one shape")
    if any(not 0.0 <= q <= 100.0 for q in qs):
        raise InvalidRequestError(f"percentiles must lie in [0, 100], got {list(qs)}")
    # Sorting in the values' own dtype is exact (widening to float64 keeps the order).
    ordered = np.sort(np.where(mask, x, np.inf), axis=0)
    count = mask.sum(axis=0)
    empty = count == 0
    last = np.maximum(count, 1) - 1
    columns = np.arange(x.shape[1])
    result = np.empty((len(qs), x.shape[1]), dtype=np.float64)
    for row, q in enumerate(qs):
        virtual = last * (q / 100.0)
        below = np.floor(virtual).astype(np.intp)
        above = np.minimum(below + 1, last)
        gamma = virtual - below
        a = np.where(empty, 0.0, ordered[below, columns].astype(np.float64))
        b = np.where(empty, 0.0, ordered[above, columns].astype(np.float64))
        diff = b - a
        lerp = np.where(gamma >= 0.5, b - diff * (1.0 - gamma), a + diff * gamma)
        result[row] = np.where(empty, -np.inf, lerp)
    return result


def bootstrap_ci(
    per_item: npt.ArrayLike, *, resamples: int = 1000, level: float = 0.95, seed: int = 0
) -> tuple[FloatArray, FloatArray]:
    """Percentile-bootstrap interval (low, high), one pair per row of `per_item` ([rows, items];
    a 1-D array is one row), of the mean over items: items are resampled with replacement.

    Every row shares the same resamples (a paired bootstrap, so intervals of strategies on the
    same items are comparable), drawn as per-resample item counts: the means of all rows are
    then one matrix product, and no [rows, resamples, items] array is ever built."""
    table = np.atleast_2d(np.asarray(per_item, dtype=np.float64))
    if table.ndim != 2 or table.shape[1] == 0:
        raise InvalidRequestError("bootstrap_ci needs at least one item")
    if resamples < 1:
        raise InvalidRequestError(f"resamples must be at least 1, got {resamples}")
    if not 0.0 < level < 1.0:
        raise InvalidRequestError(f"level must lie in (0, 1), got {level}")
    items = table.shape[1]
    rng = np.random.default_rng(seed)
    chunk = max(1, (1 << 22) // items)  # resamples per block: a few million counts at most
    means = np.empty((table.shape[0], resamples), dtype=np.float64)
    for start in range(0, resamples, chunk):
        block = min(chunk, resamples - start)
        picks = rng.integers(0, items, size=(block, items))
        picks += np.arange(block)[:, None] * items
        counts = np.bincount(picks.ravel(), minlength=block * items).reshape(block, items)
        means[:, start : start + block] = table @ counts.T.astype(np.float64) / items
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(means, [tail, 100.0 - tail], axis=1)
    return np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)


def powers_of_two(samples: int) -> list[int]:
    """The default replay sizes: 1, 2, 4, ... up to `samples`, plus `samples` itself."""
    sizes: list[int] = []
    n = 1
    while n <= samples:
        sizes.append(n)
        n *= 2
    if sizes[-1] != samples:
        sizes.append(samples)
    return sizes


def check_sizes(ns: Sequence[int], samples: int) -> list[int]:
    """Sorted, deduplicated replay sizes, each in 1..samples."""
    sizes = sorted({int(n) for n in ns})
    if not sizes:
        raise InvalidRequestError("ns is empty: give at least one sample count")
    if sizes[0] < 1 or sizes[-1] > samples:
        raise InvalidRequestError(f"every n must lie in 1..{samples} (samples per item)")
    return sizes
