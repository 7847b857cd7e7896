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
    policies: dict[str, str] | None = None,
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
        policies=policies,
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
    assert chosen.deadline_s == chosen.budget.max_seconds == 5
    chosen = choose(
        header={"x-ponder-deadline-s": "2.5"},
        body=body("self-consistency", budget={"max_seconds": 5}),
    )
    assert chosen.budget.max_seconds == 2.5  # the deadline header beats every budget
    assert choose(default_deadline=7).budget.max_seconds == 7
    assert choose(body=body(budget={"max_seconds": 1})).deadline_s == 1  # pass-through too
    both = choose(
        header={"x-ponder-budget": "samples=2"},
        body=body("self-consistency", budget={"samples": 8, "seconds": 3}),
        default_deadline=60,
    )
    assert (both.budget.max_samples, both.budget.max_seconds) == (2, 3)  # header wins per limit


@pytest.mark.parametrize(
    ("header", "budget"),
    [
        (
            "samples=8,tokens=4000,seconds=500ms,usd=$0.01",
            {"max_samples": 8, "max_tokens": 4000, "max_seconds": 0.5, "max_usd": 0.01},
        ),
        ("max_samples=4, max_tokens=100", {"max_samples": 4, "max_tokens": 100}),
        ('{"seconds": "2m", "usd": 0.5}', {"max_seconds": 120.0, "max_usd": 0.5}),
    ],
)
def test_budget_forms_in_the_header(header: str, budget: dict[str, float]) -> None:
    chosen = choose(header={"x-ponder-budget": header}, model="self-consistency/m")
    assert chosen.budget.model_dump(exclude_none=True) == budget


def test_budget_forms_in_the_body_and_the_deadline_header() -> None:
    chosen = choose(
        body=body("self-consistency", budget={"samples": "8", "seconds": "1.5s", "usd": "$0.02"})
    )
    assert chosen.budget.model_dump(exclude_none=True) == {
        "max_samples": 8,
        "max_seconds": 1.5,
        "max_usd": 0.02,
    }
    assert choose(header={"x-ponder-deadline-s": "250ms"}).deadline_s == 0.25


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
            "ponder.budget: max_tokens: Input should be greater than or equal to 1 (got 0)",
            "ponder.budget",
        ),
        (
            {"body": body("self-consistency", budget={"max_cost": 1})},
            "ponder.budget: unknown budget limit 'max_cost'; use samples (max_samples)",
            "ponder.budget",
        ),
        (
            {"body": body("self-consistency", budget={"max_seconds": 0})},
            "max_seconds: Input should be greater than 0",
            "ponder.budget",
        ),
        (
            {"body": body("self-consistency", budget={"seconds": "10 parsecs"})},
            "unknown unit 'parsecs'",
            "ponder.budget",
        ),
        (
            {"body": body("self-consistency", budget={"usd": "€1"})},
            "expected dollars such as 0.01 or $0.01",
            "ponder.budget",
        ),
        (
            {"header": {"x-ponder-budget": "samples=4,samples=8"}},
            "X-Ponder-Budget: budget 'samples=4,samples=8': samples is given twice",
            "X-Ponder-Budget",
        ),
        (
            {"header": {"x-ponder-budget": "lots"}},
            "write KEY=VALUE pairs, e.g. samples=16",
            "X-Ponder-Budget",
        ),
        (
            {"header": {"x-ponder-budget": '{"tokens": -1}'}},
            "X-Ponder-Budget: max_tokens: Input should be greater than or equal to 1",
            "X-Ponder-Budget",
        ),
        (
            {"header": {"x-ponder-deadline-s": "soon"}},
            "X-Ponder-Deadline-S: max_seconds: expected a duration such as 10s or 500ms",
            "X-Ponder-Deadline-S",
        ),
        (
            {"header": {"x-ponder-deadline-s": "100"}, "max_deadline": 10},
            "X-Ponder-Deadline-S: a deadline of 100s exceeds this server's limit of 10s",
            "X-Ponder-Deadline-S",
        ),
        (
            {"body": body(budget={"seconds": "1m"}), "max_deadline": 10},
            "ponder.budget: a deadline of 60s exceeds this server's limit of 10s",
            "ponder.budget",
        ),
        ({"header": {"x-ponder-params": "n=3"}}, "no strategy was chosen", "X-Ponder-Params"),
        (
            {"body": body(budget={"max_samples": 3})},
            "max_samples budget a strategy, and this request passes straight through",
            "ponder.budget",
        ),
        (
            {"header": {"x-ponder-budget": "usd=0.1,seconds=2"}},
            "X-Ponder-Budget: max_usd budget a strategy",
            "X-Ponder-Budget",
        ),
    ],
)
def test_errors_name_their_source(kwargs: dict[str, Any], message: str, param: str) -> None:
    with pytest.raises(SelectionError) as caught:
        choose(**kwargs)
    assert message in str(caught.value)
    assert caught.value.param == param


# --- policy files are the operator's ------------------------------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "param"),
    [
        ({"body": body("auto", params={"policy": "/etc/passwd"})}, "ponder.params"),
        ({"body": body("cascade:policy=/etc/passwd")}, "ponder.params"),
        (
            {"header": {"x-ponder-strategy": "cascade", "x-ponder-params": "policy=/etc/passwd"}},
            "X-Ponder-Params",
        ),
        (
            {"header": {"x-ponder-params": '{"policy": "/etc/passwd"}'}, "body": body("auto")},
            "X-Ponder-Params",
        ),
        ({"model": "auto:policy=policy.json/m"}, "model"),
    ],
)
def test_a_request_may_not_name_a_policy_file(kwargs: dict[str, Any], param: str) -> None:
    with pytest.raises(SelectionError) as caught:
        choose(**kwargs, policies={"auto": "/srv/auto.json"})
    assert "a request may not name a policy file" in str(caught.value)
    assert "ponder serve` auto: --policy FILE and cascade: --cascade-policy FILE" in str(
        caught.value
    )
    assert caught.value.param == param


def test_the_operators_policies_apply() -> None:
    policies = {"auto": "/srv/auto.json", "cascade": "/srv/cascade.json"}

    def params(**kwargs: Any) -> dict[str, Any]:
        chosen = choose(**kwargs).params
        assert chosen is not None
        return chosen.model_dump()

    assert params(body=body("auto"), policies=policies)["policy"] == "/srv/auto.json"
    assert params(model="cascade/m", policies=policies)["policy"] == "/srv/cascade.json"
    # A cascade request that gives its own rule follows it instead.
    own = params(model="cascade:probe=2,threshold=0.5/m", policies=policies)
    assert own["policy"] is None and own["probe"] == 2
    assert "policy" not in params(model="self-consistency/m", policies=policies)
    # Without operator policies the strategies' defaults apply; the operator's own default
    # parameters may name a file.
    assert params(body=body("auto"))["policy"] is None
    default = Choice(strategy="auto", params={"policy": "/srv/other.json"}, source="default")
    assert params(default=default)["policy"] == "/srv/other.json"
