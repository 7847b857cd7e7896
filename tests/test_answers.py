"""Tests for ponder.answers: final-answer extraction and normalisation for voting."""

from __future__ import annotations

import random

import pytest

from ponder.answers import (
    answers_agree,
    extract_answer,
    find_answer_phrase,
    find_boxed_answer,
    find_last_number,
    normalize_answer,
)

GSM8K_REASONING = """Janet's ducks lay 16 eggs per day. She eats 3 for breakfast and bakes muffins
with 4, so she uses 3 + 4 = 7 eggs.

That leaves 16 - 7 = 9 eggs, which she sells at $2 each: 9 * 2 = 18.

Therefore, the answer is $18."""

BOXED_AFTER_WORK = r"""Step 1: The train covers 120 km in 2 hours, so its speed is
120 / 2 = 60 km/h.
Step 2: In 3 more hours it covers 60 * 3 = 180 km.
Step 3: 180 - 162 = 18.

So the remaining distance is \boxed{18}."""

QWEN_STYLE = r"""To find the total, we multiply 250 by 4:
\[
250 \times 4 = 1000
\]
The final answer is: $\boxed{1,000}$"""

GSM8K_GOLD = """He buys the house for 80,000 and spends 50,000 on repairs.
The value rises by 150%, i.e. 1.5 * 80,000 = 120,000, to 200,000.
So he made 200,000 - 130,000 = 70,000.
#### 70,000"""


# ------------------------------------------------------------------------------------------
# extract_answer
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param(GSM8K_REASONING, "18", id="gsm8k-answer-is-dollar"),
        pytest.param(BOXED_AFTER_WORK, "18", id="boxed-after-intermediate-numbers"),
        pytest.param(QWEN_STYLE, "1000", id="final-answer-is-boxed-thousands"),
        pytest.param(GSM8K_GOLD, "70000", id="gsm8k-hashes"),
        pytest.param("I am not sure how to solve this.", None, id="no-number"),
        pytest.param("", None, id="empty"),
        pytest.param(r"So $x = \boxed{\frac{1}{2}}$.", "1/2", id="boxed-nested-braces"),
        pytest.param(r"\boxed{\dfrac{\sqrt{3}}{2}}", r"(\sqrt{3})/2", id="boxed-deeply-nested"),
        pytest.param(r"First \boxed{3}, then on reflection \boxed{4}.", "4", id="last-boxed-wins"),
        pytest.param(r"\fbox{12} is the result", "12", id="fbox"),
        pytest.param(r"The result is $\boxed 5$.", "5", id="boxed-without-braces"),
        pytest.param(r"\boxed{} so the answer is 7", "7", id="empty-box-skipped"),
        pytest.param(r"\boxed{4} then \boxed{12", "4", id="truncated-box-skipped"),
        pytest.param(r"\boxed{12", "12", id="only-truncated-box-falls-back"),
        pytest.param(r"\boxed{\text{(B)}}", "B", id="boxed-text-choice"),
        pytest.param(r"The answer is 5, not \boxed{6}.", "6", id="boxed-beats-phrase"),
        pytest.param("Answer: (C)", "C", id="answer-colon-choice"),
        pytest.param("The correct answer is (b).", "B", id="lowercase-choice"),
        pytest.param("**Answer:** 42", "42", id="bold-answer-label"),
        pytest.param("The answer is **42**.", "42", id="bold-answer"),
        pytest.param(
            "The final answer is 3.5. I hope it is correct.", "3.5", id="stop-at-sentence"
        ),
        pytest.param("The answer is 12 apples\nwhich is 12 + 0", "12", id="stop-at-line"),
        pytest.param("Final Answer:\n\n  17 apples", "17", id="answer-on-next-line"),
        pytest.param("The answer is 5. Wait, the answer is 6.", "6", id="last-phrase-wins"),
        pytest.param("the final answer is 1,234.50 dollars.", "1234.5", id="phrase-units"),
        pytest.param(r"The answer is $\frac{1}{2}$.", "1/2", id="phrase-latex-fraction"),
        pytest.param("The answer is .5", "0.5", id="phrase-leading-dot"),
        pytest.param("The answer is 50%.", "50", id="phrase-percent"),
        pytest.param("#### Step 1\nWe get 5 and then 7.", "7", id="markdown-heading-not-answer"),
        pytest.param("We have 3 + 4 = 7 cookies.", "7", id="last-number"),
        pytest.param("It costs 1,000 in total.", "1000", id="last-number-thousands"),
        pytest.param("The temperature is -5 degrees.", "-5", id="last-number-negative"),
        pytest.param("The temperature is \u22125 degrees.", "-5", id="last-number-unicode-minus"),
        pytest.param("Read pages 3-5", "5", id="range-is-not-negative"),
        pytest.param("He ate 3/4 of the pie.", "3/4", id="last-number-fraction"),
        pytest.param(r"so $x = \frac{3}{4}$", "3/4", id="last-number-latex-fraction"),
        pytest.param("pi is about 3.14159.", "3.14159", id="last-number-decimal"),
        pytest.param("It weighs .25 kg", "0.25", id="last-number-leading-dot"),
        pytest.param("Total: 12.50", "12.5", id="last-number-trailing-zero"),
    ],
)
def test_extract_answer(text: str, expected: str | None) -> None:
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"\boxed{5}", "5"),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed{ {a} + {b} }", "{a} + {b}"),
        (r"\boxed{\{1, 2\}}", r"\{1, 2\}"),
        (r"\boxed 5", "5"),
        (r"\boxed 5$.", "5"),
        (r"\boxed 5.", "5."),
        (r"\fbox{x}", "x"),
        (r"\boxed{1} and \boxed{2}", "2"),
        (r"\boxedfoo{5}", None),
        (r"\boxed{", None),
        ("no box here", None),
    ],
)
def test_find_boxed_answer(text: str, expected: str | None) -> None:
    assert find_boxed_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The answer is 42.", "42"),
        ("The final answer is: 42", "42"),
        ("Answer: 42", "42"),
        ("**Final Answer**: 42", "42"),
        ("#### 70,000", "70,000"),
        ("  #### -3", "-3"),
        ("##### 5", None),
        ("#### Summary", None),
        ("The answer is 3.5. Then more text.", "3.5"),
        ("To find the answer, we add.", None),
        ("Answer:", None),
    ],
)
def test_find_answer_phrase(text: str, expected: str | None) -> None:
    assert find_answer_phrase(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1 then 2 then 3", "3"),
        ("cost 1,000,000.5 total", "1,000,000.5"),
        ("x is -7", "-7"),
        ("x is \u22127", "\u22127"),
        ("5-3", "3"),
        ("ratio 3/4", "3/4"),
        (r"$\frac{3}{4}$", r"\frac{3}{4}"),
        ("It ends at 18.", "18"),
        ("version1 x2", None),
        ("1.2.3", "1.2"),
        ("nothing", None),
    ],
)
def test_find_last_number(text: str, expected: str | None) -> None:
    assert find_last_number(text) == expected


# ------------------------------------------------------------------------------------------
# normalize_answer
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        # numbers written many ways
        ("1,000", "1000"),
        ("1000", "1000"),
        ("1000.0", "1000"),
        ("1000.00", "1000"),
        ("$1000", "1000"),
        (" 1000 ", "1000"),
        (r"\$1,000", "1000"),
        ("$1,000$", "1000"),
        ("1000 dollars", "1000"),
        (r"1000\text{ dollars}", "1000"),
        (r"1{,}000", "1000"),
        (r"1\,000", "1000"),
        ("1,234,567.890", "1234567.89"),
        ("-5", "-5"),
        ("\u22125", "-5"),
        ("+5", "5"),
        ("- 5", "-5"),
        ("-$5", "-5"),
        ("$-5", "-5"),
        (".5", "0.5"),
        ("0.5", "0.5"),
        ("-.5", "-0.5"),
        ("2.50", "2.5"),
        ("0.1", "0.1"),
        ("0.000010", "0.00001"),
        ("007", "7"),
        ("-0", "0"),
        ("-0.00", "0"),
        ("12345678901234567890123456789012345.000", "12345678901234567890123456789012345"),
        ("1.000000000000000000000000000000001", "1.000000000000000000000000000000001"),
        ("18.", "18"),
        ("**18**", "18"),
        ("`18`", "18"),
        # units and marks
        ("50%", "50"),
        (r"50\%", "50"),
        ("50 percent", "50"),
        (r"90^\circ", "90"),
        (r"90^{\circ}", "90"),
        ("90°", "90"),
        ("60 km/h", "60"),
        ("5 cm^2", "5"),
        ("18 apples", "18"),
        ("5x", "5x"),
        ("2 pi", "2 pi"),
        ("5 and 7", "5 and 7"),
        ("x = 5", "5"),
        ("y = 2x + 3", "y = 2x + 3"),
        # fractions
        ("1/2", "1/2"),
        ("1 / 2", "1/2"),
        ("-1/2", "-1/2"),
        (r"\frac{1}{2}", "1/2"),
        (r"\dfrac{1}{2}", "1/2"),
        (r"\tfrac{1}{2}", "1/2"),
        (r"\frac12", "1/2"),
        (r"-\frac{3}{4}", "-3/4"),
        (r"$\frac{x+1}{2}$", "(x+1)/2"),
        (r"\frac{\frac{1}{2}}{3}", "(1/2)/3"),
        (r"\frac{\pi}{2}", r"\pi/2"),
        # multiple choice
        ("(B)", "B"),
        ("(b)", "B"),
        ("B)", "B"),
        ("B", "B"),
        ("B.", "B"),
        ("option C", "C"),
        (r"\text{(D)}", "D"),
        ("(C) 12 apples", "C"),
        # other text
        ("  New   York.  ", "New York"),
        ('"yes"', "yes"),
        (r"\left( 1 , 2 \right)", "(1, 2)"),
        (r"\text{Monday}", "Monday"),
        (r"\sqrt{2}", r"\sqrt{2}"),
        ("", ""),
        ("   ", ""),
    ],
)
def test_normalize_answer(answer: str, expected: str) -> None:
    assert normalize_answer(answer) == expected


@pytest.mark.parametrize(
    "spellings",
    [
        pytest.param(
            ["1,000", "1000", "1000.0", "$1000", "1000.00", " 1000 ", r"\$1,000", "1000 dollars"],
            id="one-thousand",
        ),
        pytest.param(["-5", "\u22125", "-5.0", "$-5$"], id="minus-five"),
        pytest.param(["5", "+5", "5.", r"\boxed{5}", r"\text{5}"], id="five"),
        pytest.param([".5", "0.5", "0.50", "$0.5$"], id="one-half-decimal"),
        pytest.param(["1/2", r"\frac{1}{2}", r"\dfrac{1}{2}", r"\tfrac12", "$1/2$"], id="one-half"),
        pytest.param(["(B)", "B", "(b)", "B)", r"\text{(B)}"], id="choice-b"),
    ],
)
def test_spellings_vote_together(spellings: list[str]) -> None:
    assert len({normalize_answer(spelling) for spelling in spellings}) == 1


def test_decimals_are_exact() -> None:
    # With floats, 0.1 + 0.2 would come out as 0.30000000000000004.
    assert normalize_answer("0.30") == normalize_answer("0.3") == "0.3"
    assert normalize_answer("0.30000000000000004") == "0.30000000000000004"


# ------------------------------------------------------------------------------------------
# answers_agree
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("a", "b", "expected"),
    [
        ("1,000", "1000.00", True),
        ("$18", "18 dollars", True),
        (r"\frac{1}{2}", "1/2", True),
        ("(C)", "C", True),
        ("0.5", "1/2", False),
        ("18", "19", False),
        ("x", "X", False),
        (None, "5", False),
        ("5", None, False),
        (None, None, False),
        ("", "", False),
        ("  ", ".", False),
    ],
)
def test_answers_agree(a: str | None, b: str | None, expected: bool) -> None:
    assert answers_agree(a, b) is expected
    assert answers_agree(b, a) is expected


# ------------------------------------------------------------------------------------------
# Idempotence: normalize(normalize(x)) == normalize(x)
# ------------------------------------------------------------------------------------------

IDEMPOTENCE_EXAMPLES = [
    "1,000",
    r"\$1,000.50",
    "\u2212.5",
    r"\frac{\frac{1}{2}}{\frac{3}{4}}",
    r"\text{\textbf{(B)}}",
    r"\te$xt{5}",
    "{,~}",
    "~X[{,~}#.",
    r"\left( 1 , 2 \right)",
    "**$18**.",
    "18.%.",
    r"\boxed{\boxed{5}",
    "x = $5$ apples",
    "  (c)  ",
    "\\",
    "",
]

# Building blocks for generated answers: the pieces the normaliser treats specially.
_FUZZ_TOKENS = (
    *"0159.,-+$%{}()[]/=:;!?*`~#\"' \n",
    *("\u2212", "\u00a0", "\u2019", "°", "B", "b", "x", "e", "pi", "cm", "dollars", "option"),
    *(r"\$", r"\%", r"^\circ", r"\frac", r"\dfrac", r"\text", r"\boxed", r"\fbox", r"\left("),
    *(r"\right)", r"\(", r"\)", r"\[", r"\]", r"\,", "{,}", r"\sqrt", r"\pi", "\\\\", "\\"),
    *("1,000", "2.50", ".5", "(C)", "**"),
)


def _generated_answers(seed: int, count: int) -> list[str]:
    """``count`` reproducible random strings built from ``_FUZZ_TOKENS``."""
    rng = random.Random(seed)
    return [
        "".join(rng.choice(_FUZZ_TOKENS) for _ in range(rng.randint(1, 10))) for _ in range(count)
    ]


@pytest.mark.parametrize("answer", IDEMPOTENCE_EXAMPLES)
def test_normalize_is_idempotent_on_examples(answer: str) -> None:
    once = normalize_answer(answer)
    assert normalize_answer(once) == once


@pytest.mark.parametrize("seed", range(10))
def test_normalize_is_idempotent_on_generated_answers(seed: int) -> None:
    for answer in _generated_answers(seed, 500):
        once = normalize_answer(answer)
        assert normalize_answer(once) == once, answer


@pytest.mark.parametrize("seed", range(3))
def test_extracted_answers_are_normalized(seed: int) -> None:
    for text in _generated_answers(seed + 100, 300):
        answer = extract_answer(text)
        assert answer is None or (answer != "" and normalize_answer(answer) == answer), text


# ------------------------------------------------------------------------------------------
# Degenerate model output: small models loop and get cut off mid-expression
# ------------------------------------------------------------------------------------------


@pytest.mark.timeout(10)
@pytest.mark.parametrize(
    "text",
    [
        pytest.param("\\boxed{" * 5000, id="unclosed-boxes"),
        pytest.param("\\text{" * 5000, id="unclosed-text"),
        pytest.param("\\frac{" * 5000, id="unclosed-fractions"),
        pytest.param("\\boxed{5}" * 5000, id="repeated-boxes"),
        pytest.param("The answer is " * 2000, id="repeated-phrase"),
        pytest.param("9" * 20000, id="huge-number"),
    ],
)
def test_degenerate_output_is_handled_quickly(text: str) -> None:
    answer = extract_answer(text)
    assert answer is None or normalize_answer(answer) == answer
