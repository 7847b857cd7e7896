"""Strategy choice for server requests: parsing each source and the precedence between them.
Pure functions, no app."""

from __future__ import annotations

from typing import Any

import pytest

from ponder.server.selection import (
    Choice,
    Selection,
    SelectionError,
    body_choice,
    header_choice,
    parse_args,
    parse_mapping,
    resolve,
    split_model_name,
)
from ponder.strategies.registry import strategies

KNOWN = tuple(strategies())


def choose(
    *,
    header: dict[str, str] | None = None,
    body: dict[str, Any] | None = None,
    model: str = "m",
    default: Choice | None = None,
    **limits: float | None,
) -> Selection:
    header_c, header_deadline = header_choice(header or {})
    body_c = body_choice(**body) if body else Choice(source="body")
    model_c, _ = split_model_name(model, KNOWN)
    return resolve(
        header=header_c,
        body=body_c,
        model=model_c,
        default=default or Choice(source="default"),
        header_deadline=header_deadline,
        **limits,
    )


def body(strategy: str | None = None, **rest: Any) -> dict[str, Any]:
    return {"strategy": strategy, "params": rest.get("params"), "budget": rest.get("budget")}


@pytest.mark.parametrize(
    ("model", "strategy", "args", "base"),
    [
        ("qwen2.5-coder-0.5b", None, {}, "qwen2.5-coder-0.5b"),
        (
            "self-consistency:8/qwen2.5-coder-0.5b",
            "self-consistency",
            {"n": "8"},
            "qwen2.5-coder-0.5b",
        ),
        ("best-of-n/m", "best-of-n", {}, "m"),
        (
            "self-consistency:8,group_by=exact/m",
            "self-consistency",
            {"n": "8", "group_by": "exact"},
            "m",
        ),
        ("self-consistency:4", "self-consistency", {"n": "4"}, ""),
        ("self-consistency", "self-consistency", {}, ""),
        ("none/m", "none", {}, "m"),
        # Model names with their own slashes and colons are left alone.
        ("Qwen/Qwen2.5-0.5B-Instruct", None, {}, "Qwen/Qwen2.5-0.5B-Instruct"),
        ("qwen2.5:0.5b", None, {}, "qwen2.5:0.5b"),
        ("hf:owner/repo/f.gguf", None, {}, "hf:owner/repo/f.gguf"),
        (
            "self-consistency:2/Qwen/Qwen2.5:0.5b",
            "self-consistency",
            {"n": "2"},
            "Qwen/Qwen2.5:0.5b",
        ),
    ],
)
def test_model_name_carries_an_optional_strategy(
    model: str, strategy: str | None, args: dict[str, str], base: str
) -> None:
    choice, rest = split_model_name(model, KNOWN)
    assert (choice.strategy, dict(choice.params), rest) == (strategy, args, base)


def test_args_and_mappings() -> None:
    assert parse_args("8, group-by = exact", "w") == {"n": "8", "group_by": "exact"}
    assert parse_args("", "w") == {}
    assert parse_mapping('{"n": 3, "group_by": "exact"}', "w") == {"n": 3, "group_by": "exact"}
    assert parse_mapping("max_samples=4,max_tokens=100", "w") == {
        "max_samples": "4",
        "max_tokens": "100",
    }
    with pytest.raises(SelectionError, match="expected key=value") as caught:
        parse_args("n=2,oops", "X-Ponder-Params")
    assert caught.value.param == "X-Ponder-Params"
    with pytest.raises(SelectionError, match="malformed JSON"):
        parse_mapping("{nope", "X-Ponder-Budget")


def test_no_choice_anywhere_passes_through() -> None:
    selection = choose()
    assert selection.passthrough and selection.params is None and selection.source == "default"


def test_each_source_alone_chooses() -> None:
    assert choose(model="self-consistency:3/m").strategy == "self-consistency"
    assert choose(body=body("best-of-n")).strategy == "best-of-n"
    assert choose(header={"x-ponder-strategy": "deepconf"}).strategy == "deepconf"
    default = Choice(strategy="self-consistency", params={"n": 2}, source="default")
    chosen = choose(default=default)
    assert chosen.strategy == "self-consistency" and chosen.source == "default"
    assert chosen.params is not None and chosen.params.model_dump()["n"] == 2


def test_precedence_header_over_body_over_model_over_default() -> None:
    default = Choice(strategy="deepconf", source="default")
    model = "best-of-n:2/m"
    b = body("weighted-vote")
    h = {"x-ponder-strategy": "self-consistency"}
    assert choose(header=h, body=b, model=model, default=default).source == "header"
    assert choose(header=h, body=b, model=model, default=default).strategy == "self-consistency"
    assert choose(body=b, model=model, default=default).strategy == "weighted-vote"
    assert choose(model=model, default=default).strategy == "best-of-n"
    assert choose(default=default).strategy == "deepconf"


def test_none_overrides_a_default_strategy() -> None:
    default = Choice(strategy="self-consistency", source="default")
    assert choose(model="none/m", default=default).passthrough
    assert choose(header={"x-ponder-strategy": "none"}, default=default).passthrough


def test_params_merge_key_by_key_for_the_same_strategy() -> None:
    chosen = choose(
        header={"x-ponder-params": "n=5"},
        body=body("self-consistency", params={"group_by": "exact", "n": 3}),
        model="self-consistency:2/m",
    )
    assert chosen.params is not None
    assert chosen.params.model_dump()["n"] == 5  # header beats body beats model
    assert chosen.params.model_dump()["group_by"] == "exact"


def test_params_for_another_strategy_are_dropped() -> None:
    # The model name asks for best-of-n with a verifier; the header picks self-consistency,
    # which has no `verifier` parameter: the model's parameters do not follow.
    chosen = choose(
        header={"x-ponder-strategy": "self-consistency:3"},
        model="best-of-n:verifier=llm-judge/m",
    )
    assert chosen.strategy == "self-consistency"
    assert chosen.params is not None and chosen.params.model_dump()["n"] == 3


def test_budget_merges_and_deadline_precedence() -> None:
    chosen = choose(
        header={"x-ponder-budget": "max_samples=4"},
        body=body("self-consistency", budget={"max_tokens": 100, "max_seconds": 5}),
    )
    assert (chosen.budget.max_samples, chosen.budget.max_tokens) == (4, 100)
    assert chosen.deadline_s == 5
    chosen = choose(
        header={"x-ponder-deadline-s": "2.5"},
        body=body("self-consistency", budget={"max_seconds": 5}),
    )
    assert chosen.deadline_s == 2.5
    assert choose(default_deadline=7).deadline_s == 7
    assert choose(body=body(budget={"max_seconds": 1})).deadline_s == 1  # pass-through too


@pytest.mark.parametrize(
    ("kwargs", "message", "param"),
    [
        (
            {"model": "self-consistency:n=0/m"},
            "n: Input should be greater than or equal to 1",
            "model",
        ),
        ({"header": {"x-ponder-strategy": "nope"}}, "unknown strategy 'nope'", "X-Ponder-Strategy"),
        ({"body": body("nope")}, "unknown strategy 'nope'", "ponder.strategy"),
        (
            {"body": body("self-consistency", params={"temperature": 1})},
            "unknown parameter 'temperature'",
            "ponder.params",
        ),
        (
            {"header": {"x-ponder-strategy": "best-of-n", "x-ponder-params": "n=abc"}},
            "n: Input should be a valid integer",
            "X-Ponder-Params",
        ),
        (
            {"body": body("self-consistency", budget={"max_tokens": 0})},
            "max_tokens: Input should be greater than or equal to 1",
            "ponder.budget",
        ),
        (
            {"body": body("self-consistency", budget={"max_cost": 1})},
            "unknown budget limit(s) 'max_cost'",
            "ponder.budget",
        ),
        (
            {"body": body("self-consistency", budget={"max_seconds": 0})},
            "positive number of seconds",
            "ponder.budget",
        ),
        ({"header": {"x-ponder-deadline-s": "soon"}}, "number of seconds", "X-Ponder-Deadline-S"),
        (
            {"header": {"x-ponder-deadline-s": "100"}, "max_deadline": 10},
            "exceeds this server's limit of 10s",
            "X-Ponder-Deadline-S",
        ),
        ({"header": {"x-ponder-params": "n=3"}}, "no strategy was chosen", "X-Ponder-Params"),
        ({"body": body(budget={"max_samples": 3})}, "passes straight through", "ponder.budget"),
    ],
)
def test_errors_name_their_source(kwargs: dict[str, Any], message: str, param: str) -> None:
    with pytest.raises(SelectionError) as caught:
        choose(**kwargs)
    assert message in str(caught.value)
    assert caught.value.param == param
