"""A sampling run in one SQLite file: the run's config, its items, and every sample with its text,
answer, answer group, grade, tokens, latency and token-confidence trace.

Why SQLite: each sample is committed in its own transaction (WAL journal), so a run killed at any
moment, `kill -9` included, keeps every sample it finished and nothing half-written, and the
primary key (item, sample) makes a duplicate impossible. One writer at a time holds an exclusive
lock on the file; readers (reports) never wait for it.

Why answer groups are assigned when a sample is stored: grouping needs math-verify (slow), while
offline evaluation replays strategies over thousands of orderings and must load a dense integer
array instead. Confidence traces are stored raw (float32) and summarised at load time, so a new
summary never needs a new run.

Strategies that must generate (verify-refine, beam search, think-longer) cannot be replayed from
stored samples, so `ponder bench live` runs them on the same items and stores one result per
(strategy config, item) in the `live` table of the same file, next to the samples it is compared
with, and each model's share of it in `live_usage` (a cascade's two models, a judge). `ponder
bench judge` stores a verifier's score of each sample in `judgements`, beside the sample, for
planners to fit thresholds on. These tables are created by the first live run or judging; a run
store without them is still valid.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import math
import os
import sqlite3
import time
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field

from ponder.bench.items import DatasetSpec, Item
from ponder.bench.machine_time import MachineTime, measure
from ponder.budget import Budget
from ponder.engines.types import FinishReason
from ponder.errors import InvalidRequestError
from ponder.strategies.result import ModelUsage

SCHEMA_VERSION = 1
NO_ANSWER = -1
"""The answer group of a sample without an answer (and of a missing sample in arrays)."""

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int32]
BoolArray = npt.NDArray[np.bool_]
Float64Array = npt.NDArray[np.float64]
Int64Array = npt.NDArray[np.int64]

_SCHEMA = """
CREATE TABLE run (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    schema_version INTEGER NOT NULL,
    config TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE items (
    item_index INTEGER PRIMARY KEY,
    item_id TEXT NOT NULL UNIQUE,
    question TEXT NOT NULL,
    prompt TEXT NOT NULL,
    reference TEXT NOT NULL,
    checker TEXT NOT NULL,
    data TEXT NOT NULL,
    prompt_tokens INTEGER
);
CREATE TABLE samples (
    item_index INTEGER NOT NULL REFERENCES items (item_index),
    sample_index INTEGER NOT NULL CHECK (sample_index >= 0),
    seed INTEGER,
    text TEXT NOT NULL,
    finish_reason TEXT NOT NULL,
    answer TEXT,
    answer_group INTEGER NOT NULL,
    score REAL NOT NULL,
    correct INTEGER NOT NULL,
    grade_detail TEXT,
    completion_tokens INTEGER NOT NULL,
    latency_s REAL NOT NULL,
    token_confidence BLOB NOT NULL,
    token_logprob BLOB NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (item_index, sample_index)
);
"""


_LIVE_SCHEMA = """
CREATE TABLE IF NOT EXISTS live_configs (
    config_key TEXT PRIMARY KEY,
    label TEXT NOT NULL UNIQUE,
    config TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS live (
    config_key TEXT NOT NULL REFERENCES live_configs (config_key),
    item_index INTEGER NOT NULL REFERENCES items (item_index),
    answer TEXT,
    correct INTEGER NOT NULL,
    score REAL NOT NULL,
    grade_detail TEXT,
    completion_tokens INTEGER NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    samples INTEGER NOT NULL,
    latency_s REAL NOT NULL,
    stopped_by TEXT,
    error TEXT,
    trace TEXT NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (config_key, item_index)
);
CREATE TABLE IF NOT EXISTS live_usage (
    config_key TEXT NOT NULL,
    item_index INTEGER NOT NULL,
    model TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    seconds REAL NOT NULL,
    PRIMARY KEY (config_key, item_index, model),
    FOREIGN KEY (config_key, item_index) REFERENCES live (config_key, item_index)
);
CREATE TABLE IF NOT EXISTS judgements (
    item_index INTEGER NOT NULL,
    sample_index INTEGER NOT NULL,
    verifier TEXT NOT NULL,
    score REAL NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    seconds REAL NOT NULL,
    created_at REAL NOT NULL,
    PRIMARY KEY (item_index, sample_index, verifier),
    FOREIGN KEY (item_index, sample_index) REFERENCES samples (item_index, sample_index)
);
"""


class RunStoreError(InvalidRequestError):
    """The run file cannot be used as asked: not a run store, busy, or made with other settings."""


class RunConfig(BaseModel):
    """Everything that decides a run's samples. Resuming with any of it changed would mix two
    experiments in one file, so it is refused (`ponder_version` is only recorded)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: DatasetSpec
    dataset_fingerprint: str
    items: int = Field(ge=1)
    model: str
    engine: str
    samples: int = Field(ge=1, le=256)
    max_tokens: int = Field(ge=1, le=131072)
    temperature: float = Field(ge=0.0, le=5.0)
    top_p: float = Field(gt=0.0, le=1.0)
    top_k: int = Field(ge=0)
    seed: int = Field(ge=0)
    top_logprobs: int = Field(ge=0, le=20)
    prompt_template: str
    ponder_version: str

    def mismatches(self, other: RunConfig) -> list[str]:
        """How `other` differs from this config, one phrase per field (version excluded)."""
        found = []
        for name in type(self).model_fields:
            if name == "ponder_version":
                continue
            mine, theirs = getattr(self, name), getattr(other, name)
            if mine == theirs:
                continue
            if name == "dataset_fingerprint":
                found.append("the items differ (the file, the generator or the prompt changed)")
            elif name == "dataset":
                found.append(f"dataset is {mine.label()} there, {theirs.label()} now")
            else:
                found.append(f"{name} is {mine!r} there, {theirs!r} now")
        return found


@dataclass(frozen=True)
class SampleRecord:
    """One stored sample. `token_confidence[i]` is DeepConf's C_i = -mean of the top-k logprobs
    at token i; `token_logprob[i]` is the sampled token's logprob (both empty without logprobs)."""

    item_index: int
    sample_index: int
    seed: int | None
    text: str
    finish_reason: FinishReason
    answer: str | None
    answer_group: int
    score: float
    correct: bool
    grade_detail: str | None
    completion_tokens: int
    latency_s: float
    token_confidence: FloatArray
    token_logprob: FloatArray


@dataclass(frozen=True)
class RunArrays:
    """A run as dense [items x samples] arrays, for offline replays. Missing samples have
    `present` False, group NO_ANSWER, correct False, and NaN in the float arrays.

    `confidence` holds per-sample trace scores: "mean" (mean token confidence), "lowest_group"
    (lowest mean over a sliding `window`), "bottom10" (mean of the lowest 10% of those windows)
    and "tail" (mean of the last `tail` tokens); NaN where a sample has no trace."""

    item_ids: tuple[str, ...]
    present: BoolArray
    group: IntArray
    correct: BoolArray
    score: FloatArray
    tokens: IntArray
    latency_s: FloatArray
    truncated: BoolArray
    confidence: dict[str, FloatArray]


class LiveConfig(BaseModel):
    """One live strategy configuration: everything that decides its results on a run's items,
    besides what the run itself fixes (model, engine, temperature, top_p, top_k, seed).

    `params` holds every parameter of the strategy, defaults included, so `-p n=8` and no `-p`
    (when 8 is the default) are the same config. A label the user chose (`named`) is part of the
    identity, so the same settings can be run again as a separate config (e.g. to see run-to-run
    variance); a default label only describes the settings and is not.

    `judge_model` and `escalate_model` name the further models a strategy draws from (an
    llm-judge's model, a cascade's larger one), on the run's engine unless `escalate_engine`
    says where; they enter the identity only when given, so older configs keep their keys."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    strategy: str = Field(min_length=1)
    params: dict[str, Any]
    budget: Budget = Budget()
    max_tokens: int = Field(ge=1, le=131072)
    label: str = Field(min_length=1)
    named: bool = False
    judge_model: str | None = None
    escalate_model: str | None = None
    escalate_engine: str | None = None

    @property
    def key(self) -> str:
        """The config's stable id in the store: a digest of its canonical JSON."""
        identity = {
            "strategy": self.strategy,
            "params": self.params,
            "budget": self.budget.model_dump(mode="json"),
            "max_tokens": self.max_tokens,
            "label": self.label if self.named else None,
        }
        further = {
            "judge_model": self.judge_model,
            "escalate_model": self.escalate_model,
            "escalate_engine": self.escalate_engine,
        }
        identity |= {name: value for name, value in further.items() if value is not None}
        canonical = json.dumps(identity, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class LiveRecord:
    """One live result: a strategy config's graded answer on one item, and what it cost.
    `completion_tokens` and `samples` count everything the strategy made the engine do (judge
    calls and refinements included); `error` holds what went wrong without failing the item
    (warnings, candidates whose code did not run); `trace` is the strategy's trace as JSON.
    `by_model` splits the tokens by the model that spent them (a cascade's or a judge's share),
    so each is priced at its own price; empty in results stored before it was recorded."""

    config_key: str
    item_index: int
    answer: str | None
    correct: bool
    score: float
    grade_detail: str | None
    completion_tokens: int
    prompt_tokens: int
    samples: int
    latency_s: float
    stopped_by: str | None
    error: str | None
    trace: str
    by_model: dict[str, ModelUsage] = field(default_factory=dict)


@dataclass(frozen=True)
class Judgement:
    """A verifier's score of one stored sample (`ponder bench judge`), and what judging it took:
    the judge's prompt and generated tokens and its seconds."""

    item_index: int
    sample_index: int
    verifier: str
    """The verifier and its model, e.g. "llm-judge:qwen2.5-coder-1.5b"."""
    score: float
    prompt_tokens: int
    completion_tokens: int
    seconds: float


@dataclass(frozen=True)
class LiveResult:
    """A live config's results over the items it has done, as arrays aligned by `item_index`
    (ascending), for reports that set them beside offline replays of the same items."""

    config: LiveConfig
    item_index: Int64Array
    correct: Float64Array
    """1.0 where the answer was right, else 0.0 (a float, so means and bootstraps need no cast)."""
    score: Float64Array
    tokens: Int64Array
    """Completion tokens the strategy generated per item."""
    samples: Int64Array
    latency_s: Float64Array

    @property
    def accuracy(self) -> float:
        return float(self.correct.mean()) if self.correct.size else math.nan


class RunStore:
    """The run file. `create_or_resume` for the sampling run (exclusive writer), `open_readonly`
    for reading a run another process may still be writing."""

    def __init__(
        self, path: Path, connection: sqlite3.Connection, lock_fd: int | None = None
    ) -> None:
        self.path = path
        self._db = connection
        self._lock_fd = lock_fd
        self.config = self._read_config()

    # --- opening ----------------------------------------------------------------------------------

    @classmethod
    def create_or_resume(cls, path: Path, config: RunConfig, items: tuple[Item, ...]) -> RunStore:
        """Start a new run at `path`, or reopen the run there if its config matches `config`.
        Only one process may write a run at a time."""
        if len(items) != config.items:
            raise ValueError(f"config says {config.items} items, {len(items)} given")
        if path.exists() and not path.is_file():
            raise RunStoreError(f"{path} is not a file; give --out a file name for the run")
        if not path.parent.is_dir():
            raise RunStoreError(f"No such folder: {path.parent}")
        with _writer(path, create=True) as (connection, lock_fd):
            if not _tables(connection, path):
                _initialise(connection, config, items)
            store = cls(path, connection, lock_fd)
        problems = store.config.mismatches(config)
        if problems:
            store.close()
            raise RunStoreError(
                f"{path} holds a run with other settings: {'; '.join(problems)}. Resume it with "
                "the same settings, or give --out a new file for a new run."
            )
        return store

    @classmethod
    def open_readonly(cls, path: Path) -> RunStore:
        """An existing run, for reading."""
        if not path.is_file():
            raise RunStoreError(f"No such run file: {path}")
        connection = _connect(path, readonly=True)
        try:
            if not _tables(connection, path):
                raise RunStoreError(f"{path} is not a ponder run store (it is an empty database)")
            return cls(path, connection)
        except BaseException:
            connection.close()
            raise

    @classmethod
    def open_for_live(cls, path: Path) -> RunStore:
        """An existing run, opened to add live results. It takes the same writer lock as
        `create_or_resume`, so a live run and the sampling run never write one file at once
        (two writers of one config would run the same items twice), and creates the live tables
        on first use."""
        if not path.is_file():
            raise RunStoreError(f"No such run file: {path}")
        with _writer(path, create=False) as (connection, lock_fd):
            if not _tables(connection, path):
                raise RunStoreError(f"{path} is not a ponder run store (it is an empty database)")
            store = cls(path, connection, lock_fd)
            store._create_live_tables()
        return store

    @staticmethod
    def stored_config(path: Path) -> RunConfig | None:
        """The config of the run at `path`; None when there is no run there yet (no file, or an
        empty one left by a start that was killed before the run was created)."""
        if not path.exists() or (path.is_file() and path.stat().st_size == 0):
            return None
        if not path.is_file():
            raise RunStoreError(f"{path} is not a file; give --out a file name for the run")
        connection = _connect(path, readonly=True)
        try:
            if not _tables(connection, path):
                return None
            return RunStore(path, connection).config
        finally:
            connection.close()

    def close(self) -> None:
        """Close the database, then release the writer lock (in this order: closing a descriptor
        of the file earlier would drop SQLite's own locks)."""
        self._db.close()
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> RunStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- reading ----------------------------------------------------------------------------------

    def items(self) -> list[Item]:
        rows = self._db.execute(
            "SELECT item_id, question, prompt, reference, checker, data FROM items "
            "ORDER BY item_index"
        ).fetchall()
        return [
            Item(
                id=item_id,
                question=question,
                prompt=tuple(json.loads(prompt)),
                reference=reference,
                checker=checker,
                data=json.loads(data),
            )
            for item_id, question, prompt, reference, checker, data in rows
        ]

    def sample_count(self) -> int:
        count: int = self._db.execute("SELECT COUNT(*) FROM samples").fetchone()[0]
        return count

    def tally(self) -> tuple[int, int]:
        """(samples stored, of which correct): the progress bar's and the summary's numbers."""
        stored, correct = self._db.execute(
            "SELECT COUNT(*), COALESCE(SUM(correct), 0) FROM samples"
        ).fetchone()
        return int(stored), int(correct)

    def missing(self) -> dict[int, list[int]]:
        """For each item that is not complete, the sample indices still to draw, in order."""
        have: dict[int, set[int]] = {}
        for item_index, sample_index in self._db.execute(
            "SELECT item_index, sample_index FROM samples"
        ):
            have.setdefault(item_index, set()).add(sample_index)
        todo = {}
        for item_index in range(self.config.items):
            done = have.get(item_index, set())
            wanted = [j for j in range(self.config.samples) if j not in done]
            if wanted:
                todo[item_index] = wanted
        return todo

    def answer_groups(self, item_index: int) -> list[str]:
        """An item's answer groups so far: entry g is the first answer stored in group g."""
        representatives: dict[int, str] = {}
        for group, answer in self._db.execute(
            "SELECT answer_group, answer FROM samples WHERE item_index = ? AND answer_group >= 0 "
            "ORDER BY created_at, sample_index",
            (item_index,),
        ):
            representatives.setdefault(group, answer)
        return [representatives[g] for g in sorted(representatives)]

    def samples(self, item_index: int | None = None) -> list[SampleRecord]:
        """Stored samples (of one item, or all), ordered by item and sample index."""
        query = f"SELECT {', '.join(_SAMPLE_COLUMNS)} FROM samples"
        arguments: tuple[Any, ...] = ()
        if item_index is not None:
            query += " WHERE item_index = ?"
            arguments = (item_index,)
        rows = self._db.execute(query + " ORDER BY item_index, sample_index", arguments)
        return [_record(row) for row in rows]

    def token_traces(
        self, item_indices: Collection[int] | None = None
    ) -> Iterator[tuple[int, int, FloatArray, FloatArray]]:
        """(item, sample, token_confidence, token_logprob) of every stored sample (of the given
        items), ordered by item and sample, without the text: what offline reports rebuild
        DeepConf's per-token group-confidence traces and the self-certainty scores from. Rows
        are read one at a time, so a large run is never held in memory twice."""
        wanted = None if item_indices is None else set(item_indices)
        rows = self._db.execute(
            "SELECT item_index, sample_index, token_confidence, token_logprob FROM samples "
            "ORDER BY item_index, sample_index"
        )
        for i, j, confidence, logprob in rows:
            if wanted is None or i in wanted:
                yield i, j, _floats(confidence), _floats(logprob)

    def machine_time(self) -> MachineTime:
        """The run's active sampling time and the tokens generated in it, from when its samples
        started and finished (`ponder.bench.machine_time.measure`): its machine time per token."""
        rows = np.array(
            self._db.execute(
                "SELECT created_at, latency_s, completion_tokens FROM samples"
            ).fetchall(),
            dtype=np.float64,
        ).reshape(-1, 3)
        return measure(rows[:, 0], rows[:, 1], rows[:, 2])

    def prompt_tokens(self) -> list[int | None]:
        rows = self._db.execute("SELECT prompt_tokens FROM items ORDER BY item_index")
        return [tokens for (tokens,) in rows]

    def load_arrays(self, window: int = 16, tail: int = 16) -> RunArrays:
        """The run as dense arrays (see `RunArrays`); `window` and `tail` size the confidence
        summaries (DeepConf's group and tail windows)."""
        if window < 1 or tail < 1:
            raise InvalidRequestError("confidence windows must be at least 1 token")
        shape = (self.config.items, self.config.samples)
        present = np.zeros(shape, dtype=np.bool_)
        group = np.full(shape, NO_ANSWER, dtype=np.int32)
        correct = np.zeros(shape, dtype=np.bool_)
        score = np.full(shape, np.nan, dtype=np.float32)
        tokens = np.zeros(shape, dtype=np.int32)
        latency = np.full(shape, np.nan, dtype=np.float32)
        truncated = np.zeros(shape, dtype=np.bool_)
        names = ("mean", "lowest_group", "bottom10", "tail")
        confidence = {name: np.full(shape, np.nan, dtype=np.float32) for name in names}
        rows = self._db.execute(
            "SELECT item_index, sample_index, answer_group, correct, score, completion_tokens, "
            "latency_s, finish_reason, token_confidence FROM samples"
        )
        for i, j, g, ok, s, n, lat, finish, blob in rows:
            present[i, j] = True
            group[i, j] = g
            correct[i, j] = bool(ok)
            score[i, j] = s
            tokens[i, j] = n
            latency[i, j] = lat
            truncated[i, j] = finish == "length"
            for name, value in zip(
                names, confidence_summaries(_floats(blob), window, tail), strict=True
            ):
                confidence[name][i, j] = value
        item_ids = tuple(
            item_id
            for (item_id,) in self._db.execute("SELECT item_id FROM items ORDER BY item_index")
        )
        return RunArrays(
            item_ids, present, group, correct, score, tokens, latency, truncated, confidence
        )

    # --- writing ----------------------------------------------------------------------------------

    def add_sample(self, record: SampleRecord) -> None:
        """Store one sample in its own transaction: once this returns, it survives a kill."""
        values = (
            record.item_index,
            record.sample_index,
            record.seed,
            record.text,
            record.finish_reason,
            record.answer,
            record.answer_group,
            record.score,
            int(record.correct),
            record.grade_detail,
            record.completion_tokens,
            record.latency_s,
            _blob(record.token_confidence),
            _blob(record.token_logprob),
            time.time(),
        )
        columns = ", ".join((*_SAMPLE_COLUMNS, "created_at"))
        marks = ", ".join("?" * len(values))
        with self._transaction():
            self._db.execute(f"INSERT INTO samples ({columns}) VALUES ({marks})", values)

    def set_prompt_tokens(self, item_index: int, tokens: int) -> None:
        with self._transaction():
            self._db.execute(
                "UPDATE items SET prompt_tokens = ? WHERE item_index = ?", (tokens, item_index)
            )

    # --- live results -----------------------------------------------------------------------------

    def ensure_live_config(self, config: LiveConfig) -> LiveConfig:
        """Register `config` (once) and return it as stored: a config run before keeps the label
        it was first stored with. Labels are unique, since reports tell configs apart by them: a
        chosen label already used by other settings is refused, and a default one that collides
        gets the config's key appended."""
        with self._transaction():
            row = self._db.execute(
                "SELECT config FROM live_configs WHERE config_key = ?", (config.key,)
            ).fetchone()
            if row is not None:
                return LiveConfig.model_validate_json(row[0])
            taken = self._db.execute(
                "SELECT 1 FROM live_configs WHERE label = ?", (config.label,)
            ).fetchone()
            if taken is not None:
                if config.named:
                    raise RunStoreError(
                        f"the label {config.label!r} already names other live settings in "
                        f"{self.path}; choose another --label"
                    )
                config = config.model_copy(update={"label": f"{config.label} [{config.key[:6]}]"})
            self._db.execute(
                "INSERT INTO live_configs (config_key, label, config, created_at) "
                "VALUES (?, ?, ?, ?)",
                (config.key, config.label, config.model_dump_json(), time.time()),
            )
        return config

    def live_configs(self) -> list[LiveConfig]:
        """Every live config in the order they were first run; none before the first live run."""
        if not self._has_live_tables():
            return []
        rows = self._db.execute("SELECT config FROM live_configs ORDER BY created_at, rowid")
        return [LiveConfig.model_validate_json(config) for (config,) in rows]

    def live_done(self, config_key: str) -> set[int]:
        """The items a live config has a stored result for."""
        if not self._has_live_tables():
            return set()
        rows = self._db.execute("SELECT item_index FROM live WHERE config_key = ?", (config_key,))
        return {item_index for (item_index,) in rows}

    def live_records(self, config_key: str) -> list[LiveRecord]:
        """A live config's stored results, by item."""
        if not self._has_live_tables():
            return []
        rows = self._db.execute(
            f"SELECT {', '.join(_LIVE_COLUMNS)} FROM live WHERE config_key = ? ORDER BY item_index",
            (config_key,),
        ).fetchall()
        usage: dict[int, dict[str, ModelUsage]] = {}
        if self._has_table("live_usage"):  # a store written before it existed has none
            for item, model, prompt, completion, seconds in self._db.execute(
                "SELECT item_index, model, prompt_tokens, completion_tokens, seconds "
                "FROM live_usage WHERE config_key = ?",
                (config_key,),
            ):
                usage.setdefault(item, {})[model] = ModelUsage(
                    prompt_tokens=prompt, completion_tokens=completion, seconds=seconds
                )
        return [_live_record(row, usage.get(row[1], {})) for row in rows]

    def live_results(self) -> list[LiveResult]:
        """Every live config that has results, with them as arrays over the items it has done
        (configs registered but with no item done yet are left out)."""
        results = []
        for config in self.live_configs():
            rows = self._db.execute(
                "SELECT item_index, correct, score, completion_tokens, samples, latency_s "
                "FROM live WHERE config_key = ? ORDER BY item_index",
                (config.key,),
            ).fetchall()
            if not rows:
                continue
            index, correct, score, tokens, samples, latency = zip(*rows, strict=True)
            results.append(
                LiveResult(
                    config=config,
                    item_index=np.array(index, dtype=np.int64),
                    correct=np.array(correct, dtype=np.float64),
                    score=np.array(score, dtype=np.float64),
                    tokens=np.array(tokens, dtype=np.int64),
                    samples=np.array(samples, dtype=np.int64),
                    latency_s=np.array(latency, dtype=np.float64),
                )
            )
        return results

    def judged(self, verifier: str) -> set[tuple[int, int]]:
        """The (item, sample) pairs `verifier` has a stored score for."""
        if not self._has_table("judgements"):
            return set()
        rows = self._db.execute(
            "SELECT item_index, sample_index FROM judgements WHERE verifier = ?", (verifier,)
        )
        return {(item, sample) for item, sample in rows}

    def judgements(self, verifier: str) -> list[Judgement]:
        """`verifier`'s stored scores, by item and sample."""
        if not self._has_table("judgements"):
            return []
        rows = self._db.execute(
            "SELECT item_index, sample_index, verifier, score, prompt_tokens, completion_tokens, "
            "seconds FROM judgements WHERE verifier = ? ORDER BY item_index, sample_index",
            (verifier,),
        )
        return [Judgement(*row) for row in rows]

    def verifiers_judged(self) -> list[str]:
        """The verifiers with stored scores, by name."""
        if not self._has_table("judgements"):
            return []
        rows = self._db.execute("SELECT DISTINCT verifier FROM judgements ORDER BY verifier")
        return [name for (name,) in rows]

    def add_judgement(self, judgement: Judgement) -> None:
        """Store one score in its own transaction; a second score of the same sample by the
        same verifier is refused."""
        try:
            with self._transaction():
                self._db.execute(
                    "INSERT INTO judgements (item_index, sample_index, verifier, score, "
                    "prompt_tokens, completion_tokens, seconds, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        judgement.item_index,
                        judgement.sample_index,
                        judgement.verifier,
                        judgement.score,
                        judgement.prompt_tokens,
                        judgement.completion_tokens,
                        judgement.seconds,
                        time.time(),
                    ),
                )
        except sqlite3.IntegrityError as error:
            raise RunStoreError(
                f"sample {judgement.sample_index} of item {judgement.item_index} is already "
                f"judged by {judgement.verifier} in {self.path}, or is not stored: {error}"
            ) from error

    def add_live(self, record: LiveRecord) -> None:
        """Store one live result in its own transaction: once this returns, it survives a kill.
        A second result for the same config and item is refused, never stored twice."""
        values = (
            record.config_key,
            record.item_index,
            record.answer,
            int(record.correct),
            record.score,
            record.grade_detail,
            record.completion_tokens,
            record.prompt_tokens,
            record.samples,
            record.latency_s,
            record.stopped_by,
            record.error,
            record.trace,
            time.time(),
        )
        columns = ", ".join((*_LIVE_COLUMNS, "created_at"))
        marks = ", ".join("?" * len(values))
        try:
            with self._transaction():
                self._db.execute(f"INSERT INTO live ({columns}) VALUES ({marks})", values)
                self._db.executemany(
                    "INSERT INTO live_usage (config_key, item_index, model, prompt_tokens, "
                    "completion_tokens, seconds) VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (
                            record.config_key,
                            record.item_index,
                            model,
                            used.prompt_tokens,
                            used.completion_tokens,
                            used.seconds,
                        )
                        for model, used in record.by_model.items()
                    ],
                )
        except sqlite3.IntegrityError as error:
            if "UNIQUE" in str(error):
                raise RunStoreError(
                    f"item {record.item_index} already has a result for live config "
                    f"{record.config_key} in {self.path}"
                ) from error
            raise RunStoreError(
                f"live result for item {record.item_index} refused by {self.path}: {error} "
                "(unknown config or item)"
            ) from error

    # --- internals --------------------------------------------------------------------------------

    def _has_live_tables(self) -> bool:
        return self._has_table("live") and self._has_table("live_configs")

    def _has_table(self, name: str) -> bool:
        found = self._db.execute(
            "SELECT COUNT(*) FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
        ).fetchone()[0]
        return bool(found)

    def _create_live_tables(self) -> None:
        with self._transaction():
            for statement in _LIVE_SCHEMA.split(";"):
                if statement.strip():
                    self._db.execute(statement)

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _read_config(self) -> RunConfig:
        row = self._db.execute("SELECT schema_version, config FROM run WHERE id = 1").fetchone()
        if row is None:
            raise RunStoreError(f"{self.path} is not a ponder run store (it has no run config)")
        version, config = row
        if version > SCHEMA_VERSION:
            raise RunStoreError(
                f"{self.path} was written by a newer ponder (run format {version}); upgrade ponder"
            )
        return RunConfig.model_validate_json(config)


_SAMPLE_COLUMNS = (
    "item_index",
    "sample_index",
    "seed",
    "text",
    "finish_reason",
    "answer",
    "answer_group",
    "score",
    "correct",
    "grade_detail",
    "completion_tokens",
    "latency_s",
    "token_confidence",
    "token_logprob",
)


_LIVE_COLUMNS = (
    "config_key",
    "item_index",
    "answer",
    "correct",
    "score",
    "grade_detail",
    "completion_tokens",
    "prompt_tokens",
    "samples",
    "latency_s",
    "stopped_by",
    "error",
    "trace",
)


def _connect(path: Path, *, readonly: bool) -> sqlite3.Connection:
    """An autocommit connection (transactions are explicit) in WAL mode. Readers connect
    read-write but never write: a `mode=ro` connection could not remove the WAL files when it
    is the last to close, and the run would stop being a single file."""
    try:
        connection = sqlite3.connect(path, isolation_level=None)
        try:
            connection.execute("PRAGMA busy_timeout = 10000")
            if not readonly:
                connection.execute("PRAGMA journal_mode = WAL")
                connection.execute("PRAGMA synchronous = NORMAL")
            connection.execute("PRAGMA foreign_keys = ON")
            connection.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        except BaseException:
            connection.close()
            raise
    except sqlite3.DatabaseError as error:
        raise RunStoreError(f"{path} is not a ponder run store ({error})") from error
    return connection


def _tables(connection: sqlite3.Connection, path: Path) -> set[str]:
    """The store's tables; a database with other tables is someone else's file."""
    names = {
        name
        for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    if names and not {"run", "items", "samples"} <= names:
        raise RunStoreError(f"{path} is an SQLite database, but not a ponder run store")
    return names


def _initialise(connection: sqlite3.Connection, config: RunConfig, items: tuple[Item, ...]) -> None:
    """Create the tables, the config and the items in one transaction: a run killed while being
    created leaves an empty database, which the next start initialises again."""
    connection.execute("BEGIN IMMEDIATE")
    try:
        for statement in _SCHEMA.split(";"):
            if statement.strip():
                connection.execute(statement)
        connection.execute(
            "INSERT INTO run (id, schema_version, config, created_at) VALUES (1, ?, ?, ?)",
            (SCHEMA_VERSION, config.model_dump_json(), time.time()),
        )
        connection.executemany(
            "INSERT INTO items (item_index, item_id, question, prompt, reference, checker, data) "
            "VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                (
                    index,
                    item.id,
                    item.question,
                    json.dumps([m.model_dump(mode="json") for m in item.prompt]),
                    item.reference,
                    item.checker,
                    json.dumps(item.data, default=_jsonable),
                )
                for index, item in enumerate(items)
            ),
        )
    except BaseException:
        connection.execute("ROLLBACK")
        raise
    connection.execute("COMMIT")


def _jsonable(value: object) -> object:
    """Generated entries may hold tuples or numpy scalars; store them as their plain values."""
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def _record(row: tuple[Any, ...]) -> SampleRecord:
    (i, j, seed, text, finish, answer, group, score, correct, detail, tokens, latency, conf, lp) = (
        row
    )
    return SampleRecord(
        item_index=i,
        sample_index=j,
        seed=seed,
        text=text,
        finish_reason=finish,
        answer=answer,
        answer_group=group,
        score=score,
        correct=bool(correct),
        grade_detail=detail,
        completion_tokens=tokens,
        latency_s=latency,
        token_confidence=_floats(conf),
        token_logprob=_floats(lp),
    )


def _live_record(row: tuple[Any, ...], by_model: dict[str, ModelUsage]) -> LiveRecord:
    (
        key,
        i,
        answer,
        correct,
        score,
        detail,
        tokens,
        prompt,
        samples,
        latency,
        stop,
        error,
        trace,
    ) = row
    return LiveRecord(
        config_key=key,
        item_index=i,
        answer=answer,
        correct=bool(correct),
        score=score,
        grade_detail=detail,
        completion_tokens=tokens,
        prompt_tokens=prompt,
        samples=samples,
        latency_s=latency,
        stopped_by=stop,
        error=error,
        trace=trace,
        by_model=by_model,
    )


def _blob(values: FloatArray) -> bytes:
    return np.asarray(values, dtype="<f4").tobytes()


def _floats(blob: bytes) -> FloatArray:
    return np.frombuffer(blob, dtype="<f4").astype(np.float32)


def confidence_summaries(
    conf: FloatArray, window: int, tail: int
) -> tuple[float, float, float, float]:
    """(mean, lowest group, bottom-10% groups, tail) of a token-confidence trace; NaN when empty.
    A trace shorter than `window` is one group (as DeepConf's strategy does)."""
    if conf.size == 0:
        return (math.nan, math.nan, math.nan, math.nan)
    values = conf.astype(np.float64)
    if values.size < window:
        groups = np.array([values.mean()])
    else:
        sums = np.concatenate(([0.0], np.cumsum(values)))
        groups = (sums[window:] - sums[:-window]) / window
    lowest = np.sort(groups)[: max(1, math.ceil(groups.size * 0.1))]
    return (
        float(values.mean()),
        float(groups.min()),
        float(lowest.mean()),
        float(values[-tail:].mean()),
    )


@contextmanager
def _writer(path: Path, *, create: bool) -> Iterator[tuple[sqlite3.Connection, int]]:
    """The run's writer lock and a writable connection; both are released if the body fails
    (on success the store that the body builds owns them). One writer per file: `bench run` and
    `bench live` never write one run at once."""
    lock_fd = os.open(path, os.O_RDWR | (os.O_CREAT if create else 0), 0o644)
    try:
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError as error:
            raise RunStoreError(
                f"{path} is being written by another `ponder bench run` or `ponder bench live`; "
                "wait for it to finish or stop it first"
            ) from error
        connection = _connect(path, readonly=False)
        try:
            yield connection, lock_fd
        except BaseException:
            connection.close()
            raise
    except BaseException:
        os.close(lock_fd)
        raise
