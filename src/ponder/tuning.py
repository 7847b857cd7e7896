"""Batch-size and quantization advice for the embedded engine (`ponder tune`).

For each number of parallel sequences n, one request draws n samples of the same prompt with
end-of-text ignored and a fixed number of new tokens, so every n does the same work per sequence.
From it come the aggregate tokens/s, each sample's decode tokens/s and the time to first token,
and from those the per-sample latency of an answer of T tokens. The advice is deliberately plain:
the largest n whose latency meets the target, or (with no target) the smallest n within a few per
cent of the best throughput. Several quantizations of one base model are compared on speed and,
when asked, greedy accuracy on a small GSM8K slice.

The fastest of the repeats is kept for each n: the machine is shared, and noise only slows a run.
"""

from __future__ import annotations

import asyncio
import ctypes
import dataclasses
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict, computed_field

from ponder.bench.datasets import Dataset, load_dataset, parse_dataset
from ponder.bench.items import Item
from ponder.engines.base import Engine
from ponder.engines.factory import LOCAL, open_engine
from ponder.engines.llama_model import LlamaModel, default_threads
from ponder.engines.types import GenerationRequest, Message, SamplingParams
from ponder.errors import ContextOverflowError, EngineError, InvalidRequestError
from ponder.models.store import ModelStore
from ponder.strategies.primitives import as_messages

TUNE_QUESTION = (
    "Janet's ducks lay 16 eggs per day. She eats three for breakfast every morning and bakes "
    "muffins for her friends every day with four. She sells the remainder at the farmers' market "
    "daily for $2 per fresh duck egg. How much in dollars does she make every day at the farmers' "
    "market? Explain each step of your reasoning carefully, check the arithmetic twice, and state "
    "any assumptions you make about the problem before giving the final answer."
)
"""The fixed prompt every measurement answers (a GSM8K question asking for long reasoning)."""

TEMPERATURE = 0.8
DEFAULT_NS = (1, 2, 4, 8, 16)
DEFAULT_TOKENS = 128
DEFAULT_ANSWER_TOKENS = 256
DEFAULT_REPEATS = 2
DEFAULT_N_CTX = 16384
DEFAULT_ACCURACY_MAX_TOKENS = 512
ACCURACY_DATASET = "gsm8k"
WARMUP_TOKENS = 8
MAX_SEQUENCES = 256
THROUGHPUT_TOLERANCE = 0.05
"""With no latency target, the smallest n within this fraction of the best throughput wins: the
last few per cent of throughput are within noise and cost latency."""

ProgressFn = Callable[[str], None]


def tune_messages() -> tuple[Message, ...]:
    return as_messages(TUNE_QUESTION)


def fixed_work_request(n: int, tokens: int, seed: int | None = None) -> GenerationRequest:
    """n samples of the tuning prompt, each exactly `tokens` new tokens (end-of-text ignored)."""
    params = SamplingParams(
        n=n, max_tokens=tokens, temperature=TEMPERATURE, seed=seed, ignore_eos=True
    )
    return GenerationRequest(messages=tune_messages(), params=params)


def parse_counts(text: str) -> tuple[int, ...]:
    """'1,2,4' -> (1, 2, 4): the parallel-sequence counts to measure, sorted, each once."""
    parts = [part.strip() for part in text.split(",") if part.strip()]
    if not parts:
        raise InvalidRequestError("the list of n is empty: give counts such as 1,2,4,8,16")
    try:
        return tuple(sorted({int(part) for part in parts}))
    except ValueError:
        raise InvalidRequestError(
            f"n must be whole numbers separated by commas (such as 1,2,4,8), got {text!r}"
        ) from None


@dataclasses.dataclass(frozen=True)
class TuneSettings:
    """What to measure. Checked on creation, so a bad value fails before a model is loaded."""

    ns: tuple[int, ...] = DEFAULT_NS
    tokens: int = DEFAULT_TOKENS
    answer_tokens: int = DEFAULT_ANSWER_TOKENS
    latency_s: float | None = None
    repeats: int = DEFAULT_REPEATS
    accuracy_items: int = 0
    accuracy_max_tokens: int = DEFAULT_ACCURACY_MAX_TOKENS
    n_ctx: int = DEFAULT_N_CTX
    threads: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.ns:
            raise InvalidRequestError("the list of n is empty: give counts such as 1,2,4,8,16")
        if min(self.ns) < 1 or max(self.ns) > MAX_SEQUENCES:
            raise InvalidRequestError(f"every n must lie in 1..{MAX_SEQUENCES}, got {self.ns}")
        object.__setattr__(self, "ns", tuple(sorted(set(self.ns))))
        if self.tokens < 2:
            raise InvalidRequestError(
                f"tokens must be at least 2 (one to start, one to time decoding), got {self.tokens}"
            )
        if self.answer_tokens < 1:
            raise InvalidRequestError(f"answer tokens must be at least 1, got {self.answer_tokens}")
        if self.latency_s is not None and not self.latency_s > 0:
            raise InvalidRequestError(
                f"the latency target must be a positive number of seconds, got {self.latency_s}"
            )
        if self.repeats < 1:
            raise InvalidRequestError(f"repeats must be at least 1, got {self.repeats}")
        if self.accuracy_items < 0:
            raise InvalidRequestError(
                f"accuracy items must be 0 (skip) or more, got {self.accuracy_items}"
            )
        if self.accuracy_max_tokens < 1:
            raise InvalidRequestError(
                f"accuracy max tokens must be at least 1, got {self.accuracy_max_tokens}"
            )
        if self.n_ctx < 64:
            raise InvalidRequestError(f"n_ctx must be at least 64, got {self.n_ctx}")
        if self.threads is not None and self.threads < 1:
            raise InvalidRequestError(f"threads must be at least 1, got {self.threads}")


class Measurement(BaseModel):
    """One timed request: n samples of `tokens` new tokens each, decoded together."""

    model_config = ConfigDict(frozen=True)

    n: int
    tokens: int
    wall_s: float
    """From sending the request to its last sample's end."""
    first_token_s: float
    """Waiting plus prompt evaluation (once for all n samples), as the engine reports it."""

    @computed_field  # type: ignore[prop-decorator]
    @property
    def throughput_tok_s(self) -> float:
        """New tokens of all samples per wall second."""
        return self.n * self.tokens / self.wall_s

    @computed_field  # type: ignore[prop-decorator]
    @property
    def decode_tok_s(self) -> float:
        """One sample's tokens per second after its first."""
        return (self.tokens - 1) / max(self.wall_s - self.first_token_s, 1e-9)

    def latency_s(self, answer_tokens: int) -> float:
        """Seconds until one sample of `answer_tokens` tokens is complete, at this n."""
        return self.first_token_s + (answer_tokens - 1) / self.decode_tok_s


class TunePoint(BaseModel):
    """A measurement with its latency for the answer length asked about."""

    model_config = ConfigDict(frozen=True)

    measurement: Measurement
    answer_latency_s: float
    within_target: bool | None
    """None when no latency target was given."""


class Recommendation(BaseModel):
    model_config = ConfigDict(frozen=True)

    n: int | None
    """None when no measured n meets the latency target."""
    reason: str


def recommend(
    measurements: Sequence[Measurement],
    answer_tokens: int,
    latency_s: float | None = None,
    tolerance: float = THROUGHPUT_TOLERANCE,
) -> Recommendation:
    """The largest n whose per-sample latency for `answer_tokens` stays within `latency_s`, or,
    with no target, the smallest n within `tolerance` of the best aggregate throughput."""
    if not measurements:
        raise InvalidRequestError("nothing was measured, so there is nothing to recommend")
    ordered = sorted(measurements, key=lambda m: m.n)
    answer = f"a {answer_tokens}-token answer"
    if latency_s is None:
        best = max(ordered, key=lambda m: m.throughput_tok_s)
        pick = next(
            m for m in ordered if m.throughput_tok_s >= (1 - tolerance) * best.throughput_tok_s
        )
        reason = f"n={pick.n} gives {pick.throughput_tok_s:.1f} tokens/s in all"
        if pick is best:
            reason += ", the most of any n measured"
        else:
            saved = best.latency_s(answer_tokens) - pick.latency_s(answer_tokens)
            reason += (
                f", within {tolerance:.0%} of the best ({best.throughput_tok_s:.1f} tokens/s at "
                f"n={best.n}) with {saved:.1f} s less latency per sample"
            )
        reason += f"; each sample takes about {pick.latency_s(answer_tokens):.1f} s for {answer}"
        return Recommendation(n=pick.n, reason=reason)
    within = [m for m in ordered if m.latency_s(answer_tokens) <= latency_s]
    if not within:
        quickest = min(ordered, key=lambda m: m.latency_s(answer_tokens))
        return Recommendation(
            n=None,
            reason=f"no n meets {latency_s:g} s for {answer}: even n={quickest.n} takes "
            f"{quickest.latency_s(answer_tokens):.1f} s per sample; allow more time, ask for "
            "shorter answers or use a smaller model",
        )
    pick = within[-1]
    reason = (
        f"n={pick.n} is the largest n whose samples finish {answer} within {latency_s:g} s "
        f"({pick.latency_s(answer_tokens):.1f} s each, {pick.throughput_tok_s:.1f} tokens/s in all)"
    )
    larger = [m for m in ordered if m.n > pick.n]
    if larger:
        reason += f"; n={larger[0].n} would take {larger[0].latency_s(answer_tokens):.1f} s"
    else:
        reason += "; no larger n was measured"
    return Recommendation(n=pick.n, reason=reason)


def fitting_counts(
    ns: Sequence[int], prompt_tokens: int, tokens_per_sample: int, n_ctx: int
) -> tuple[list[int], list[int]]:
    """Split `ns` into those whose samples fit the KV cache beside the shared prompt and those
    that do not (the prompt's cells are stored once, each sample's tokens once per sample)."""
    kept = [n for n in ns if prompt_tokens + n * tokens_per_sample <= n_ctx]
    return kept, [n for n in ns if n not in kept]


class ModelFacts(BaseModel):
    """What a GGUF file says about itself: the base model it quantizes, and how."""

    model_config = ConfigDict(frozen=True)

    name: str
    path: Path
    base: str
    """general.basename and general.size_label (else general.name, else architecture and
    parameter count): quantizations of one model share it."""
    quantization: str
    file_bytes: int
    parameters: int


def read_model_facts(path: Path, name: str) -> ModelFacts:
    """Read the GGUF header through llama.cpp (the weights are mapped, not read)."""
    model = LlamaModel(path)
    lib = model.lib
    buffer = ctypes.create_string_buffer(512)

    def meta(key: str) -> str | None:
        if lib.llama_model_meta_val_str(model.model, key.encode(), buffer, len(buffer)) < 0:
            return None
        return buffer.value.decode(errors="replace").strip() or None

    try:
        lib.llama_model_desc(model.model, buffer, len(buffer))
        description = buffer.value.decode(errors="replace")
        parameters = int(lib.llama_model_n_params(model.model))
        basename, size_label = meta("general.basename"), meta("general.size_label")
        general_name = meta("general.name")
    finally:
        model.close()
    parts = description.split(" ", 2)  # "<architecture> <size> <quantization>"
    if basename:
        base = f"{basename} {size_label or ''}".strip()
    elif general_name:
        base = general_name
    else:
        base = f"{parts[0]} {parameters / 1e6:.0f}M parameters"
    return ModelFacts(
        name=name,
        path=path,
        base=base,
        quantization=parts[2] if len(parts) == 3 else description,
        file_bytes=path.stat().st_size,
        parameters=parameters,
    )


def quantization_groups(models: Sequence[ModelFacts]) -> list[list[ModelFacts]]:
    """Models sharing a base model, in the order given; only groups of two or more."""
    groups: dict[str, list[ModelFacts]] = {}
    for model in models:
        groups.setdefault(model.base.casefold(), []).append(model)
    return [group for group in groups.values() if len(group) > 1]


class Accuracy(BaseModel):
    """Greedy accuracy on the first `items` items of a dataset."""

    model_config = ConfigDict(frozen=True)

    dataset: str
    items: int
    correct: int
    max_tokens: int
    wall_s: float

    @computed_field  # type: ignore[prop-decorator]
    @property
    def accuracy(self) -> float:
        return self.correct / self.items


class ModelTune(BaseModel):
    """Everything measured for one model."""

    model: ModelFacts
    prompt_tokens: int
    points: list[TunePoint]
    skipped_ns: list[int]
    """Counts whose samples of max(tokens, answer tokens) would not fit the KV cache."""
    recommendation: Recommendation
    accuracy: Accuracy | None = None


class TuneReport(BaseModel):
    """`ponder tune`'s result: one entry per model, and the quantization groups among them."""

    settings: TuneSettings
    threads: int
    load_average_start: float
    load_average_end: float
    models: list[ModelTune]
    quantization_groups: list[list[str]]
    """Names of models that are quantizations of one base model (compared side by side)."""


async def measure(engine: Engine, n: int, tokens: int, seed: int | None = None) -> Measurement:
    """Time one fixed-work request of n samples."""
    start = time.perf_counter()
    generation = await engine.generate(fixed_work_request(n, tokens, seed))
    wall_s = time.perf_counter() - start
    made = generation.usage.completion_tokens
    if made != n * tokens:
        raise EngineError(
            f"asked for {n} x {tokens} tokens with end-of-text ignored but got {made}: "
            "this engine does not generate a fixed amount, so it cannot be tuned"
        )
    prompt_s = generation.timings.prompt_s
    if prompt_s is None:
        raise EngineError(
            "the engine did not report its prompt time: tuning needs the embedded one"
        )
    return Measurement(
        n=n, tokens=tokens, wall_s=wall_s, first_token_s=generation.timings.queued_s + prompt_s
    )


async def sweep(
    engine: Engine,
    ns: Sequence[int],
    tokens: int,
    repeats: int,
    seed: int | None = None,
    on_progress: ProgressFn | None = None,
) -> list[Measurement]:
    """Each n `repeats` times, interleaved (so a noisy moment hits every n alike); the fastest
    run of each n is kept."""
    best: dict[int, Measurement] = {}
    for repeat in range(repeats):
        for n in ns:
            if on_progress is not None:
                on_progress(f"{engine.model}: n={n} ({repeat + 1}/{repeats})")
            measured = await measure(engine, n, tokens, seed)
            if n not in best or measured.wall_s < best[n].wall_s:
                best[n] = measured
    return [best[n] for n in ns]


async def greedy_accuracy(engine: Engine, dataset: Dataset, max_tokens: int) -> Accuracy:
    """Answer every item greedily (all submitted at once; the engine batches them) and grade."""
    params = SamplingParams(n=1, max_tokens=max_tokens, temperature=0.0)
    start = time.perf_counter()

    async def answer(item: Item) -> str:
        generation = await engine.generate(GenerationRequest(messages=item.prompt, params=params))
        return generation.completions[0].text

    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(answer(item)) for item in dataset.items]
    # Graded here, on the loop's thread: math-verify's timeouts need the main thread.
    grades = [
        await dataset.checker.grade(task.result(), item)
        for task, item in zip(tasks, dataset.items, strict=True)
    ]
    return Accuracy(
        dataset=dataset.spec.label(),
        items=len(grades),
        correct=sum(grade.correct for grade in grades),
        max_tokens=max_tokens,
        wall_s=time.perf_counter() - start,
    )


async def tune_model(
    engine: Engine,
    facts: ModelFacts,
    settings: TuneSettings,
    dataset: Dataset | None = None,
    on_progress: ProgressFn | None = None,
) -> ModelTune:
    """Warm up, measure every n that fits, recommend, and (given a dataset) measure accuracy."""
    warmup = await engine.generate(
        fixed_work_request(1, min(WARMUP_TOKENS, settings.tokens), settings.seed)
    )
    prompt_tokens = warmup.usage.prompt_tokens
    per_sample = max(settings.tokens, settings.answer_tokens)
    kept, skipped = fitting_counts(settings.ns, prompt_tokens, per_sample, settings.n_ctx)
    if not kept:
        raise ContextOverflowError(
            f"not even n={settings.ns[0]} fits: {settings.ns[0]} x {per_sample} tokens after a "
            f"{prompt_tokens}-token prompt exceed the {settings.n_ctx}-cell KV cache; raise n_ctx "
            "or lower the answer tokens"
        )
    measured = await sweep(
        engine, kept, settings.tokens, settings.repeats, settings.seed, on_progress
    )
    target = settings.latency_s
    points = [
        TunePoint(
            measurement=m,
            answer_latency_s=m.latency_s(settings.answer_tokens),
            within_target=None if target is None else m.latency_s(settings.answer_tokens) <= target,
        )
        for m in measured
    ]
    accuracy = None
    if dataset is not None:
        if on_progress is not None:
            on_progress(f"{engine.model}: greedy accuracy on {len(dataset.items)} items")
        accuracy = await greedy_accuracy(engine, dataset, settings.accuracy_max_tokens)
    return ModelTune(
        model=facts,
        prompt_tokens=prompt_tokens,
        points=points,
        skipped_ns=skipped,
        recommendation=recommend(measured, settings.answer_tokens, target),
        accuracy=accuracy,
    )


async def tune(
    models: Sequence[str],
    settings: TuneSettings,
    *,
    store: ModelStore | None = None,
    on_progress: ProgressFn | None = None,
) -> TuneReport:
    """Tune each model in turn (one engine at a time, so they never share the cores). Every
    name is resolved before anything is loaded, so a typo fails at once."""
    store = store or ModelStore()
    resolved = [store.resolve(ref) for ref in (models or [store.default_model])]
    unique = [m for i, m in enumerate(resolved) if m.path not in {r.path for r in resolved[:i]}]
    dataset = None
    if settings.accuracy_items:
        dataset = load_dataset(parse_dataset(ACCURACY_DATASET), limit=settings.accuracy_items)
    load_start = os.getloadavg()[0]
    tuned = []
    for model in unique:
        path = store.ensure(model.ref)
        facts = read_model_facts(path, model.name)
        engine = open_engine(
            LOCAL,
            model.ref,
            store=store,
            n_ctx=settings.n_ctx,
            max_sequences=max(settings.ns),
            n_threads=settings.threads,
        )
        async with engine:
            tuned.append(await tune_model(engine, facts, settings, dataset, on_progress))
    return TuneReport(
        settings=settings,
        threads=settings.threads or default_threads(),
        load_average_start=load_start,
        load_average_end=os.getloadavg()[0],
        models=tuned,
        quantization_groups=[
            [m.name for m in group] for group in quantization_groups([t.model for t in tuned])
        ],
    )
