"""Aggregate decode throughput of ponder's embedded engine against llama.cpp itself, side by side.

For n = 1, 8, 16 samples of the same prompt on the same model, in one run:
  (a) sequential: n calls of llama-cpp-python's high-level `create_completion`, one after another;
  (b) raw: a bare low-level batched loop (prompt once, `llama_memory_seq_cp`, one `llama_decode` per
      step for all sequences, llama.cpp's own sampler chain) -- the ceiling;
  (c) ponder: `EmbeddedEngine.generate` with n samples (the request `ponder tune` times).
Every sample generates exactly --max-tokens tokens (end-of-text ignored), so all three do the same
work; tokens/s = completion tokens / wall seconds of the whole request. Each measurement is repeated
(interleaved) and the best run is kept, since this machine is shared and noisy.

    python benchmarks/engine_throughput.py [--model qwen2.5-coder-0.5b] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from ponder.engines.embedded import EmbeddedEngine
from ponder.engines.llama_model import LlamaModel, default_threads
from ponder.engines.types import GenerationRequest
from ponder.models.store import ModelStore
from ponder.tuning import TEMPERATURE, fixed_work_request, measure, parse_counts, tune_messages

N_CTX = 8192


class RawBatched:
    """The ceiling: llama.cpp's batched decode with nothing around it, on its own context."""

    def __init__(self, model: LlamaModel, n_seq_max: int) -> None:
        lib = self.lib = model.lib
        params = lib.llama_context_default_params()
        params.n_ctx = N_CTX
        params.n_batch = params.n_ubatch = 512
        params.n_seq_max = n_seq_max
        params.n_threads = params.n_threads_batch = default_threads()
        params.kv_unified = True
        params.no_perf = True
        params.flash_attn_type = lib.LLAMA_FLASH_ATTN_TYPE_ENABLED
        self.ctx = lib.llama_init_from_model(model.model, params)
        self.memory = lib.llama_get_memory(self.ctx)
        self.batch = lib.llama_batch_init(512, 0, 1)

    def run(self, prompt: list[int], n: int, max_tokens: int, seed: int) -> int:
        """Prompt once, share it with n sequences, decode them together. Returns tokens made."""
        lib, ctx, batch = self.lib, self.ctx, self.batch
        lib.llama_memory_clear(self.memory, True)
        samplers = []
        for i in range(n):
            chain = lib.llama_sampler_chain_init(lib.llama_sampler_chain_default_params())
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_temp(TEMPERATURE))
            lib.llama_sampler_chain_add(chain, lib.llama_sampler_init_dist(seed + i))
            samplers.append(chain)
        try:
            for k, token in enumerate(prompt):
                batch.token[k], batch.pos[k], batch.n_seq_id[k] = token, k, 1
                batch.seq_id[k][0], batch.logits[k] = 0, k == len(prompt) - 1
            batch.n_tokens = len(prompt)
            assert lib.llama_decode(ctx, batch) == 0
            for i in range(1, n):
                lib.llama_memory_seq_cp(self.memory, 0, i, -1, -1)
            tokens = [lib.llama_sampler_sample(s, ctx, -1) for s in samplers]
            for step in range(max_tokens - 1):
                for i, token in enumerate(tokens):
                    batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, len(prompt) + step, 1
                    batch.seq_id[i][0], batch.logits[i] = i, 1
                batch.n_tokens = n
                assert lib.llama_decode(ctx, batch) == 0
                tokens = [lib.llama_sampler_sample(s, ctx, i) for i, s in enumerate(samplers)]
            return n * max_tokens
        finally:
            for s in samplers:
                lib.llama_sampler_free(s)

    def close(self) -> None:
        self.lib.llama_batch_free(self.batch)
        self.lib.llama_free(self.ctx)


def sequential_high_level(llama: Any, prompt: list[int], n: int, max_tokens: int, seed: int) -> int:
    """What a user without batching does: n separate completions, one after another."""
    generated = 0
    for i in range(n):
        out = llama.create_completion(
            prompt, max_tokens=max_tokens, temperature=TEMPERATURE, seed=seed + i, logit_bias=None
        )
        generated += out["usage"]["completion_tokens"]
    return generated


def ponder_engine(engine: EmbeddedEngine, n: int, max_tokens: int, seed: int) -> int:
    """The same fixed-work request `ponder tune` times (it checks every token was made)."""
    measured = asyncio.run(measure(engine, n, max_tokens, seed))
    return measured.n * measured.tokens


def concurrent_slowdown(engine: EmbeddedEngine, n: int, max_tokens: int) -> float:
    """Wall time of two concurrent n-sample requests over one alone (2.0 = no sharing at all)."""
    request = fixed_work_request(n, max_tokens)

    async def one() -> float:
        start = time.perf_counter()
        await engine.generate(request)
        return time.perf_counter() - start

    async def two() -> float:
        start = time.perf_counter()
        await asyncio.gather(engine.generate(request), engine.generate(request))
        return time.perf_counter() - start

    return asyncio.run(two()) / asyncio.run(one())


def best_rate(run: Callable[[], int], repeats: int) -> float:
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        tokens = run()
        rates.append(tokens / (time.perf_counter() - start))
    return max(rates)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="catalogue name or .gguf path")
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--ns", default="1,8,16", help="comma-separated sample counts")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args()
    from llama_cpp import Llama

    store = ModelStore()
    path = store.ensure(args.model or store.default_model)
    ns = list(parse_counts(args.ns))
    engine = EmbeddedEngine(path, n_ctx=N_CTX, max_sequences=max(ns))
    prompt = engine.tokenize_request(GenerationRequest(messages=tune_messages()))
    bare = LlamaModel(path)
    raw_loop = RawBatched(bare, max(ns))
    llama = Llama(
        str(path), n_ctx=2048, n_threads=default_threads(), verbose=False, flash_attn=True
    )
    load = os.getloadavg()[0]
    results: dict[str, Any] = {
        "model": path.name,
        "prompt_tokens": len(prompt),
        "max_tokens": args.max_tokens,
        "threads": default_threads(),
        "load_average_at_start": load,
    }
    try:
        raw_loop.run(prompt, 2, 8, 0)  # warm both up: first decodes pay one-off costs
        ponder_engine(engine, 2, 8, 0)
        for n in ns:
            seq = best_rate(
                partial(sequential_high_level, llama, prompt, n, args.max_tokens, 7),
                1 if n > 1 else args.repeats,
            )
            raw = ponder = 0.0
            for _ in range(args.repeats):  # interleaved, so a noisy moment hits both
                raw = max(raw, best_rate(partial(raw_loop.run, prompt, n, args.max_tokens, 7), 1))
                ponder = max(
                    ponder,
                    best_rate(partial(ponder_engine, engine, n, args.max_tokens, 7), 1),
                )
            results[f"sequential_tok_s_n{n}"] = round(seq, 1)
            results[f"raw_tok_s_n{n}"] = round(raw, 1)
            results[f"ponder_tok_s_n{n}"] = round(ponder, 1)
            results[f"ponder_vs_raw_n{n}"] = round(ponder / raw, 3)
            results[f"ponder_vs_sequential_n{n}"] = round(ponder / seq, 3)
            if not args.json:
                print(
                    f"n={n:>2}: sequential {seq:6.1f} tok/s | raw batched {raw:6.1f} tok/s | "
                    f"ponder {ponder:6.1f} tok/s | ponder/raw {ponder / raw:.3f} | "
                    f"ponder/sequential {ponder / seq:.2f}",
                    flush=True,
                )
        pair = min(8, max(ns) // 2)  # two requests of `pair` samples must fit the engine at once
        if pair:
            slowdown = min(
                concurrent_slowdown(engine, pair, args.max_tokens) for _ in range(args.repeats)
            )
            results[f"two_concurrent_vs_one_time_n{pair}"] = round(slowdown, 3)
            if not args.json:
                print(f"two concurrent n={pair} requests take {slowdown:.2f}x the time of one")
    finally:
        asyncio.run(engine.aclose())
        llama.close()
        raw_loop.close()
        bare.close()
    results["load_average_at_end"] = os.getloadavg()[0]
    if args.json:
        print(json.dumps(results))
    else:
        print(f"load average: {load:.2f} at start, {results['load_average_at_end']:.2f} at end")


if __name__ == "__main__":
    main()
