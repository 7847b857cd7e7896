"""A user's own benchmark: one JSON object per line, with the prompt, reference answer and
(optionally) id in fields named on the command line. Every problem is reported with its line
number, so a bad file is fixed in one go rather than discovered mid-run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ponder.bench.checkers import make_checker
from ponder.bench.items import CheckerName, DatasetSpec, Item, JsonlFields
from ponder.errors import InvalidRequestError

ALLOWED_CHECKERS: tuple[CheckerName, ...] = ("math", "multiple-choice", "code-exec")


def load(spec: DatasetSpec) -> list[Item]:
    """The file's items in file order. For `code-exec`, the answer field holds test code (asserts)
    run after the sample's code."""
    assert spec.path is not None
    path = spec.path
    fields = spec.fields or JsonlFields()
    checker_name: CheckerName = spec.checker or "math"
    if checker_name not in ALLOWED_CHECKERS:
        raise InvalidRequestError(
            f"a JSONL dataset can use the checkers {', '.join(ALLOWED_CHECKERS)}, "
            f"not {checker_name!r}"
        )
    checker = make_checker(checker_name)
    text = _read(path)
    items: list[Item] = []
    ids: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        record = _record(path, number, line)
        question = _field(path, number, record, fields.prompt, "--prompt-field")
        reference = _field(path, number, record, fields.answer, "--answer-field")
        item_id = (
            _field(path, number, record, fields.id, "--id-field")
            if fields.id is not None
            else str(len(items))
        )
        if not question.strip():
            raise InvalidRequestError(f"line {number} of {path}: the prompt is empty")
        if item_id in ids:
            raise InvalidRequestError(
                f"line {number} of {path}: id {item_id!r} was already used on line "
                f"{ids[item_id]}; ids must be unique"
            )
        ids[item_id] = number
        data: dict[str, Any] = {"tests": reference} if checker_name == "code-exec" else {}
        items.append(
            Item(
                id=item_id,
                question=question,
                prompt=checker.prompt(question),
                reference=reference,
                checker=checker_name,
                data=data,
            )
        )
    if not items:
        raise InvalidRequestError(f"{path} has no items: it is empty or only blank lines")
    return items


def _read(path: Path) -> str:
    if not path.exists():
        raise InvalidRequestError(f"No such file: {path}")
    if not path.is_file():
        raise InvalidRequestError(f"{path} is not a file; give a JSONL file, one item per line")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as error:
        raise InvalidRequestError(f"{path} is not UTF-8 text: {error}") from error
    except OSError as error:
        raise InvalidRequestError(f"Cannot read {path}: {error.strerror}") from error


def _record(path: Path, number: int, line: str) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as error:
        raise InvalidRequestError(
            f"line {number} of {path} is not valid JSON ({error.msg}); a JSONL file has one "
            "JSON object per line"
        ) from error
    if not isinstance(record, dict):
        raise InvalidRequestError(
            f"line {number} of {path} is a JSON {type(record).__name__}, not an object"
        )
    return record


def _field(path: Path, number: int, record: dict[str, Any], name: str, option: str) -> str:
    if name not in record:
        present = ", ".join(repr(key) for key in record) or "none"
        raise InvalidRequestError(
            f"line {number} of {path} has no field {name!r} (its fields: {present}); "
            f"name the right one with {option}"
        )
    value = record[name]
    if isinstance(value, str):
        return value
    if value is None or isinstance(value, dict | list):
        raise InvalidRequestError(
            f"line {number} of {path}: field {name!r} must be a string or a number, "
            f"not {json.dumps(value)[:60]}"
        )
    return str(value)
