"""The run store: config checks on reopening, one writer at a time, no duplicate samples, files
that are not run stores, and the dense arrays offline evaluation loads."""

from __future__ import annotations

import math
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from ponder.bench.items import DatasetSpec, Item
from ponder.bench.store import (
    NO_ANSWER,
    RunConfig,
    RunStore,
    RunStoreError,
    SampleRecord,
    confidence_summaries,
)
from ponder.engines.types import Message

ITEMS = tuple(
    Item(
        id=f"q{i}",
        question=f"{i}+1?",
        prompt=(Message(role="user", content=f"{i}+1?"),),
        reference=str(i + 1),
        checker="math",
        data={"entry": (i, np.int64(i))},  # generated entries may hold tuples and numpy values
    )
    for i in range(3)
)


def config(**changes: object) -> RunConfig:
    base = RunConfig(
        dataset=DatasetSpec(name="gsm8k"),
        dataset_fingerprint="abc",
        items=3,
        model="smollm2-135m",
        engine="local",
        samples=4,
        max_tokens=32,
        temperature=0.8,
        top_p=1.0,
        top_k=0,
        seed=0,
        top_logprobs=5,
        prompt_template="math-boxed-v1",
        ponder_version="0.1.0",
    )
    return base.model_copy(update=changes)


def record(item: int, sample: int, **changes: object) -> SampleRecord:
    fields: dict[str, object] = {
        "item_index": item,
        "sample_index": sample,
        "seed": item * 4 + sample,
        "text": f"sample {item}/{sample} \\boxed{{{sample}}}",
        "finish_reason": "stop",
        "answer": str(sample),
        "answer_group": sample % 2,
        "score": float(sample == 1),
        "correct": sample == 1,
        "grade_detail": None,
        "completion_tokens": 3,
        "latency_s": 0.5,
        "token_confidence": np.array([1.0, 2.0, 3.0], dtype=np.float32),
        "token_logprob": np.array([-0.1, -0.2, -0.3], dtype=np.float32),
    }
    fields.update(changes)
    return SampleRecord(**fields)  # type: ignore[arg-type]


def test_a_new_run_stores_config_items_and_samples(tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    assert RunStore.stored_config(path) is None
    with RunStore.create_or_resume(path, config(), ITEMS) as store:
        assert store.missing() == {0: [0, 1, 2, 3], 1: [0, 1, 2, 3], 2: [0, 1, 2, 3]}
        store.add_sample(record(0, 1))
        store.add_sample(record(0, 3, answer=None, answer_group=NO_ANSWER))
        store.set_prompt_tokens(0, 17)
    assert RunStore.stored_config(path) == config()
    assert not (tmp_path / "run.db-wal").exists()  # one file once closed
    with RunStore.create_or_resume(path, config(ponder_version="9.9"), ITEMS) as store:
        assert store.missing()[0] == [0, 2]
        assert store.sample_count() == 2 and store.tally() == (2, 1)
        assert [i.id for i in store.items()] == ["q0", "q1", "q2"]
        assert store.items()[0].data == {"entry": [0, 0]}
        assert store.items()[0].prompt == ITEMS[0].prompt
        assert store.prompt_tokens() == [17, None, None]
        first = store.samples(0)[0]
        assert first.text == "sample 0/1 \\boxed{1}" and first.correct and first.seed == 1
        np.testing.assert_array_equal(first.token_confidence, [1.0, 2.0, 3.0])
        assert first.token_confidence.dtype == np.float32
        assert store.answer_groups(0) == ["1"]


def test_a_sample_is_never_stored_twice(tmp_path: Path) -> None:
    with RunStore.create_or_resume(tmp_path / "run.db", config(), ITEMS) as store:
        store.add_sample(record(1, 2))
        with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
            store.add_sample(record(1, 2, text="another"))
        assert [s.text for s in store.samples()] == ["sample 1/2 \\boxed{2}"]
        store.add_sample(record(1, 3))  # the failed insert left no transaction open


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"model": "qwen2.5-0.5b"}, "model is 'smollm2-135m' there, 'qwen2.5-0.5b' now"),
        ({"samples": 8}, "samples is 4 there, 8 now"),
        ({"dataset": DatasetSpec(name="math500")}, "dataset is gsm8k there, math500 now"),
        ({"dataset_fingerprint": "xyz"}, "the items differ"),
        ({"seed": 1, "max_tokens": 64}, "max_tokens is 32 there, 64 now; seed is 0 there, 1 now"),
    ],
)
def test_reopening_with_other_settings_names_the_mismatch(
    tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    path = tmp_path / "run.db"
    RunStore.create_or_resume(path, config(), ITEMS).close()
    with pytest.raises(RunStoreError, match=message.replace("(", r"\(")):
        RunStore.create_or_resume(path, config(**changes), ITEMS)
    RunStore.create_or_resume(path, config(), ITEMS).close()  # the failed open let go of it


def test_only_one_writer_at_a_time_but_readers_are_welcome(tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    with RunStore.create_or_resume(path, config(), ITEMS) as writer:
        writer.add_sample(record(0, 0))
        with pytest.raises(RunStoreError, match="being written by another"):
            RunStore.create_or_resume(path, config(), ITEMS)
        with RunStore.open_readonly(path) as reader:
            assert reader.sample_count() == 1
            writer.add_sample(record(0, 1))
            assert reader.sample_count() == 2
    RunStore.create_or_resume(path, config(), ITEMS).close()


def test_files_that_are_not_run_stores(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello, this is not a database at all" * 10)
    for opener in (
        lambda p: RunStore.create_or_resume(p, config(), ITEMS),
        RunStore.open_readonly,
        RunStore.stored_config,
    ):
        with pytest.raises(RunStoreError, match="not a ponder run store"):
            opener(text)
    other = tmp_path / "other.db"
    with sqlite3.connect(other) as connection:
        connection.execute("CREATE TABLE t (x)")
    with pytest.raises(RunStoreError, match="SQLite database, but not a ponder run store"):
        RunStore.create_or_resume(other, config(), ITEMS)
    with pytest.raises(RunStoreError, match="is not a file"):
        RunStore.create_or_resume(tmp_path, config(), ITEMS)
    with pytest.raises(RunStoreError, match="No such folder"):
        RunStore.create_or_resume(tmp_path / "no" / "run.db", config(), ITEMS)
    with pytest.raises(RunStoreError, match="No such run file"):
        RunStore.open_readonly(tmp_path / "missing.db")


def test_an_empty_file_left_by_a_killed_start_becomes_the_run(tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    path.touch()
    assert RunStore.stored_config(path) is None
    with RunStore.create_or_resume(path, config(), ITEMS) as store:
        assert store.sample_count() == 0 and store.config == config()


def test_load_arrays_is_dense_with_missing_samples_marked(tmp_path: Path) -> None:
    path = tmp_path / "run.db"
    with RunStore.create_or_resume(path, config(), ITEMS) as store:
        store.add_sample(record(0, 0))
        store.add_sample(record(0, 1, finish_reason="length"))
        store.add_sample(
            record(
                2, 3, answer=None, answer_group=NO_ANSWER, token_confidence=np.empty(0, np.float32)
            )
        )
        arrays = store.load_arrays(window=2, tail=1)
    assert arrays.item_ids == ("q0", "q1", "q2")
    assert arrays.present.shape == (3, 4) and arrays.present.sum() == 3
    assert arrays.group[0].tolist() == [0, 1, NO_ANSWER, NO_ANSWER]
    assert arrays.group.dtype == np.int32 and arrays.group[2, 3] == NO_ANSWER
    assert arrays.correct[0].tolist() == [False, True, False, False]
    assert arrays.tokens[0, 0] == 3 and arrays.tokens[1, 0] == 0
    assert arrays.latency_s[0, 0] == 0.5 and math.isnan(arrays.latency_s[1, 0])
    assert arrays.truncated[0].tolist() == [False, True, False, False]
    conf = arrays.confidence
    assert conf["mean"][0, 0] == pytest.approx(2.0)
    assert conf["lowest_group"][0, 0] == pytest.approx(1.5)  # windows of 2: 1.5, 2.5
    assert conf["bottom10"][0, 0] == pytest.approx(1.5)
    assert conf["tail"][0, 0] == pytest.approx(3.0)
    assert math.isnan(conf["mean"][2, 3]) and math.isnan(conf["mean"][1, 1])


def test_confidence_summaries() -> None:
    trace = np.array([5, 5, 1, 1, 5, 5, 5, 5, 5, 5, 5, 5], dtype=np.float32)
    mean, lowest, bottom, tail = confidence_summaries(trace, window=2, tail=3)
    assert mean == pytest.approx(trace.mean())
    assert lowest == pytest.approx(1.0) and bottom == pytest.approx(2.0)  # 2 lowest of 11: 1, 3
    assert tail == pytest.approx(5.0)
    short = confidence_summaries(np.array([1, 3], dtype=np.float32), window=16, tail=16)
    assert short == pytest.approx((2.0, 2.0, 2.0, 2.0))
    assert all(math.isnan(v) for v in confidence_summaries(np.empty(0, np.float32), 4, 4))
