"""The top-k shortcut used for logprobs agrees with a full sort, peaked or flat."""

from __future__ import annotations

import numpy as np
import pytest

from ponder.engines.llama_batcher import top_indices


@pytest.mark.parametrize("spread", [0.1, 2.0, 30.0])
@pytest.mark.parametrize("k", [1, 5, 20])
def test_top_indices_match_a_full_sort(spread: float, k: int) -> None:
    rng = np.random.default_rng(7)
    logits = (rng.standard_normal(50_000) * spread).astype(np.float32)
    logits[123] += 40  # a dominant token, as after a confident step
    expected = np.argsort(-logits, kind="stable")[:k]
    got = top_indices(logits, float(logits.max()), k)
    assert list(got) == list(expected)
