"""Benchmark run stores opened for planning: read-only (a run still being sampled is safe), its
complete items only, as the report loads them."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ponder.bench.judging import judge_arrays
from ponder.bench.machine_time import run_price
from ponder.bench.report import complete_items, replay_data
from ponder.bench.store import RunStore
from ponder.engines.factory import LOCAL
from ponder.planning.outcomes import PlanError, PlanRun
from ponder.planning.policy import RunSource
from ponder.planning.pricing import Price, price_for


def load_run(path: Path, *, window: int = 16, prices: Mapping[str, Price] | None = None) -> PlanRun:
    """The complete items of the run at `path` with its price (the default machine cost for the
    embedded engine, else from `prices`; None for a remote model without one), an hourly price
    charged as the machine time of the generated tokens, as the report charges it."""
    with RunStore.open_readonly(path) as store:
        used = complete_items(store)
        if not used:
            raise PlanError(
                f"{path} has no complete item yet (every one of its {store.config.samples} "
                "samples stored); `ponder bench run` stores them as it goes"
            )
        data = replay_data(store, window=window, items=used)
        ids = [item.id for item in store.items()]
        prompt = store.prompt_tokens()
        known = [tokens for i in used if (tokens := prompt[i]) is not None]
        config = store.config
        price = run_price(
            store, price_for(config.model, local=config.engine == LOCAL, prices=prices)
        ).price
        judges = judge_arrays(store, used)
    return PlanRun(
        data,
        RunSource.of(path, config, [ids[i] for i in used]),
        float(np.mean(known)) if known else None,
        price,
        judges,
    )
