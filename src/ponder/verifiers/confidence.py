"""Confidence of a sampled trace from its own token logprobs: pure, vectorised functions shared by
the self-certainty verifier and the DeepConf strategy.

DeepConf (Fu et al. 2025, arXiv 2508.15260): the token confidence at position i is the negated
mean of the top-k logprobs there, ``C_i = -(1/k) * sum_j log P_i(j)``. A peaked distribution (the
model is sure) puts little mass on the alternatives, so their logprobs are very negative and C_i is
large. Group confidence is the mean of C over a sliding window of tokens; a trace is as confident
as its weakest stretch (the lowest group confidence) or, for early stopping, its last tokens (the
tail confidence).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from ponder.engines.types import TokenLogprob

FloatArray = npt.NDArray[np.float64]


def token_confidences(logprobs: Sequence[TokenLogprob], k: int | None = None) -> FloatArray:
    """C_i = -mean of the (first `k`, else all) top logprobs at each position.

    A position without alternatives uses its sampled token's logprob alone, so a trace sampled
    without `top_logprobs` still gets a value (a weak one: with k = 1 it measures surprise)."""
    if not logprobs:
        return np.zeros(0)
    width = max(len(entry.top_logprobs) for entry in logprobs)
    if k is not None:
        width = min(width, k)
    width = max(width, 1)
    table = np.full((len(logprobs), width), np.nan)
    for i, entry in enumerate(logprobs):
        values = [top.logprob for top in entry.top_logprobs[:width]] or [entry.logprob]
        table[i, : len(values)] = values
    return np.asarray(-np.nanmean(table, axis=1), dtype=np.float64)


def group_confidences(token_conf: npt.ArrayLike, window: int) -> FloatArray:
    """The mean of every `window` consecutive token confidences (len - window + 1 groups). A trace
    shorter than the window is one group: the mean of what exists. No tokens, no groups."""
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    values = np.asarray(token_conf, dtype=np.float64)
    if values.size == 0:
        return np.zeros(0)
    if values.size <= window:
        return np.array([values.mean()])
    sums = np.cumsum(np.concatenate(([0.0], values)))
    return np.asarray((sums[window:] - sums[:-window]) / window, dtype=np.float64)


def lowest_group_confidence(token_conf: npt.ArrayLike, window: int) -> float:
    """The trace's weakest stretch: the minimum group confidence (DeepConf's C_least)."""
    groups = group_confidences(token_conf, window)
    if groups.size == 0:
        raise ValueError("no tokens: confidence is undefined")
    return float(groups.min())


def bottom_group_confidence(token_conf: npt.ArrayLike, window: int, fraction: float = 0.1) -> float:
    """The mean of the lowest `fraction` of group confidences (DeepConf's bottom-10%)."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    groups = np.sort(group_confidences(token_conf, window))
    if groups.size == 0:
        raise ValueError("no tokens: confidence is undefined")
    return float(groups[: max(1, math.ceil(fraction * groups.size))].mean())


def tail_confidence(token_conf: npt.ArrayLike, tail: int = 2048) -> float:
    """The mean token confidence over the last `tail` tokens (all of them if fewer)."""
    if tail < 1:
        raise ValueError(f"tail must be at least 1, got {tail}")
    values = np.asarray(token_conf, dtype=np.float64)
    if values.size == 0:
        raise ValueError("no tokens: confidence is undefined")
    return float(values[-tail:].mean())


def mean_logprob(logprobs: Sequence[TokenLogprob]) -> float:
    """The mean logprob of the sampled tokens; exp of it is their geometric-mean probability."""
    if not logprobs:
        raise ValueError("no tokens: the mean logprob is undefined")
    return float(np.mean([entry.logprob for entry in logprobs]))
