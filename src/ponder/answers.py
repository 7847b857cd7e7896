"""Final-answer extraction and normalisation, for voting over sampled chain-of-thought answers.

Self-consistency samples several reasoning paths and lets their final answers vote. That only
works when the same answer, written two ways, lands in the same bucket: "1,000", "$1000",
"1000.00" and ``\\boxed{1000}`` must all count as one vote. This module does two things:

* :func:`extract_answer` finds the final answer in a model's reasoning text: the last
  ``\\boxed{...}``, else the last "The answer is ..." / "Answer: ..." / "#### ..." phrase,
  else the last number.
* :func:`normalize_answer` maps an answer to a canonical string. Numbers are parsed with
  :class:`decimal.Decimal` (never ``float``), so "0.3" and "0.30" agree and nothing like
  0.30000000000000004 can appear.

Everything here is a pure function over strings; the module holds only immutable constants.
"""

from __future__ import annotations

import re
from decimal import Decimal

__all__ = [
    "answers_agree",
    "extract_answer",
    "find_answer_phrase",
    "find_boxed_answer",
    "find_last_number",
    "normalize_answer",
]

# --------------------------------------------------------------------------------------------
# Extraction
# --------------------------------------------------------------------------------------------

_BOXED_COMMAND = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
"""``\\boxed`` or ``\\fbox``, not the start of a longer command name."""

_BARE_BOXED_ARGUMENT = re.compile(r"[^\s$]+")
"""The argument of ``\\boxed 5``: everything up to whitespace or a closing ``$``."""

_ANSWER_PHRASE = re.compile(
    r"""
    (?:
        \banswer(?:\*\*)?[ \t]*(?:is\b[ \t]*:?|:)   # "the (final) answer is", "**Answer**:"
      | ^[ \t]*(?<!\#)\#\#\#\#(?!\#)             # GSM8K's "#### 42", at the start of a line,
        (?=[ \t]*[-\u2212+$\\.\d])               # followed by something number-like
    )
    """,
    re.IGNORECASE | re.MULTILINE | re.VERBOSE,
)
"""An explicit answer phrase (the answer is what follows it).

"####" only counts when a number-like answer follows it, so a markdown heading such as
"#### Step 2" is not taken for an answer.
"""

_NEXT_LINE = re.compile(r"[ \t]*\n\s*(?P<line>[^\n]*)")
"""The next non-blank line, for "Answer:" with the answer itself on the following line."""

_SENTENCE_END = re.compile(r"[.!?](?=\s|$)")
"""A full stop (or ! / ?) that ends a sentence, as opposed to a decimal point."""

_NUMBER = re.compile(
    r"""
    (?<![\w.])                                   # not glued to a word or to another number
    [-\u2212]?
    (?:
        \\[dt]?frac\{\s*\d+\s*\}\{\s*\d+\s*\}    # \frac{3}{4}
      | \d{1,3}(?:,\d{3})+(?:\.\d+)?             # 1,000 and 1,234.5
      | \d+/\d+                                  # 3/4
      | \d+(?:\.\d+)?                            # 42 and 3.14
      | \.\d+                                    # .5
    )
    (?!\d)
    """,
    re.VERBOSE,
)
"""A number as models write it in running text."""


def extract_answer(text: str) -> str | None:
    """The normalised final answer of a model's reasoning ``text``, or None if it has none.

    Sources, by priority: the last ``\\boxed{...}`` (or ``\\fbox{...}``), then the last explicit
    answer phrase ("The final answer is ...", "Answer: ...", "#### 42"), then the last number.
    A source whose answer normalises to the empty string is skipped.
    """
    for find in (find_boxed_answer, find_answer_phrase, find_last_number):
        raw = find(text)
        if raw is not None:
            answer = normalize_answer(raw)
            if answer:
                return answer
    return None


def find_boxed_answer(text: str) -> str | None:
    """The raw content of the last complete, non-empty ``\\boxed`` / ``\\fbox`` in ``text``.

    Braces nest (``\\boxed{\\frac{1}{2}}`` gives ``\\frac{1}{2}``) and the brace-less form
    ``\\boxed 5`` gives ``5``. A box cut off before its closing brace (a truncated generation)
    is skipped in favour of an earlier one.
    """
    braces = _brace_pairs(text)
    for match in reversed(list(_BOXED_COMMAND.finditer(text))):
        content = _command_argument(text, match.end(), braces)
        if content is not None and content.strip():
            return content.strip()
    return None


def find_answer_phrase(text: str) -> str | None:
    """The raw answer after the last explicit answer phrase in ``text``, or None.

    The answer runs to the end of its sentence or line; when the phrase ends its line
    ("Answer:" then a line break), the next non-blank line is the answer. Currency signs,
    surrounding markdown bold and a sentence-ending full stop are removed.
    """
    for match in reversed(list(_ANSWER_PHRASE.finditer(text))):
        line_end = text.find("\n", match.end())
        rest = text[match.end() : line_end if line_end >= 0 else len(text)]
        if not _strip_markup(rest):
            following = _NEXT_LINE.match(text, match.end())
            rest = following.group("line") if following else ""
        answer = _strip_markup(_first_sentence(rest))
        if answer:
            return answer
    return None


def find_last_number(text: str) -> str | None:
    """The last number in ``text`` as written there ("1,000", "-3.5", "3/4", ...), or None."""
    numbers = _NUMBER.findall(text)
    return str(numbers[-1]) if numbers else None


def _command_argument(text: str, start: int, braces: dict[int, int]) -> str | None:
    """The argument of a one-argument LaTeX command whose name ends at ``start``.

    Either a balanced ``{...}`` group (returned without its braces) or, LaTeX-style without
    braces, the run of non-blank characters that follows. None if there is neither.
    """
    position = start
    while position < len(text) and text[position].isspace():
        position += 1
    if position < len(text) and text[position] == "{":
        close = braces.get(position)
        return None if close is None else text[position + 1 : close]
    if position == start:  # "\boxedx" is another command, "\boxed x" is boxed "x"
        return None
    bare = _BARE_BOXED_ARGUMENT.match(text, position)
    return bare.group() if bare else None


def _brace_pairs(text: str) -> dict[int, int]:
    """The index of the matching ``}`` for every ``{`` in ``text`` that is closed.

    Nested groups are matched; escaped braces (``\\{``, ``\\}``) do not count. Computed once per
    text, so that reading many (possibly unclosed) groups stays linear in its length.
    """
    pairs: dict[int, int] = {}
    open_braces: list[int] = []
    position = 0
    while position < len(text):
        char = text[position]
        if char == "\\":
            position += 2
            continue
        if char == "{":
            open_braces.append(position)
        elif char == "}" and open_braces:
            pairs[open_braces.pop()] = position
        position += 1
    return pairs


def _first_sentence(text: str) -> str:
    """``text`` up to (not including) the first sentence-ending ``.``, ``!`` or ``?``."""
    end = _SENTENCE_END.search(text)
    return text[: end.start()] if end else text


# --------------------------------------------------------------------------------------------
# Normalisation
# --------------------------------------------------------------------------------------------

_WRAPPER_COMMAND = re.compile(
    r"\\(?:boxed|fbox|mbox|text(?:bf|it|rm|sf|tt|normal)?|math(?:rm|bf|it|sf|tt))\s*(?=\{)"
)
"""LaTeX commands whose argument is the answer itself: ``\\text{...}``, ``\\boxed{...}``, ..."""

_FRAC_COMMAND = re.compile(r"\\[dt]?frac(?![A-Za-z])")
"""``\\frac``, ``\\dfrac`` or ``\\tfrac``."""

_LATEX_COMMAND_NAME = re.compile(r"\\[A-Za-z]+|\\.")
"""A control word (``\\pi``) or control symbol (``\\%``)."""

_ATOM = re.compile(r"-?(?:[\w.]+|\\[A-Za-z]+)")
"""A fraction part that needs no parentheses around it."""

_LATEX_REPLACEMENTS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\\\$"), ""),  # escaped dollar: a currency sign
    (re.compile(r"\$"), ""),  # math delimiters
    (re.compile(r"\\[()\[\]]"), ""),  # \( \) \[ \] math delimiters
    (re.compile(r"\{,\}"), ","),  # 1{,}000
    (re.compile(r"\\[,:;!]"), ""),  # thin spaces, as in 1\,000
    (re.compile(r"\\(?:q?quad(?![A-Za-z])|\s)|~"), " "),  # wide spaces
    (re.compile(r"\\(?:displaystyle|left|right)(?![A-Za-z])"), ""),
    (re.compile(r"\\%"), "%"),
    (re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\degree(?![A-Za-z])|°"), "°"),
)
"""Pattern, replacement pairs that strip LaTeX presentation down to the answer's content."""

_UNICODE_REPLACEMENTS: tuple[tuple[str, str], ...] = (
    ("\u2212", "-"),  # minus sign
    ("\u2013", "-"),  # en dash, used as a minus by some models
    ("\u00a0", " "),  # no-break space
    ("\u202f", " "),  # narrow no-break space (a thousands separator in some locales)
)

_BRACKET_SPACE = re.compile(r"(?<=[(\[{]) | (?=[)\]},])")
"""A space just inside a bracket or before a comma, which carries no meaning."""

_EDGE_CHARACTERS = " \t\n\r*`\"'\u201c\u201d\u2018\u2019"
"""Stripped from both ends: whitespace, markdown emphasis and code marks, quotes."""

_TRAILING_PUNCTUATION = ".,;:!?"
"""Stripped from the end: sentence punctuation."""

_CURRENCY_SIGNS = re.compile(r"[$€£¥₹]")

_TRAILING_UNIT_MARK = re.compile(r"\s*[%°]$")
"""A trailing percent or degree sign: "50%" and "50" vote together."""

_DECIMAL = re.compile(r"(?P<sign>[-+]?)\s*(?P<digits>\d+(?:\.\d*)?|\.\d+)")
_GROUPED_DECIMAL = re.compile(r"(?P<sign>[-+]?)\s*(?P<digits>\d{1,3}(?:,\d{3})+(?:\.\d*)?)")
_FRACTION = re.compile(r"(?P<sign>[-+]?)\s*(?P<numerator>\d+)\s*/\s*(?P<denominator>\d+)")

_NUMBER_WITH_UNIT = re.compile(
    r"(?P<number>.*?\d)\s*"
    r"(?P<unit>[A-Za-z][A-Za-z./-]*(?:\s+[A-Za-z][A-Za-z./-]*)*(?:\^\{?[23]\}?)?)"
)
"""A number followed by unit words: "18 apples", "60 km/h", "5 cm^2", "1000 dollars"."""

_NOT_UNITS = frozenset({"pi", "e", "i", "n", "x", "y", "z"})
"""Trailing "words" that are constants or variables, so "2 pi" and "3x" stay as they are."""

_ASSIGNMENT = re.compile(r"[A-Za-z]\s*=\s*(?P<value>.+)")
"""A single-variable answer such as "x = 5"."""

_CHOICE_LETTER = re.compile(
    r"(?:(?i:option|choice)\s+)?(?:\((?P<paren>[A-Za-z])\)|(?P<bare>[A-Z])\)?)"
)
"""A multiple-choice letter: "(B)", "(b)", "B)", "B", "option B"."""

_LABELLED_CHOICE = re.compile(r"\((?P<letter>[A-J])\)\s+\S.*", re.DOTALL)
"""A choice letter followed by the choice's text: "(C) 12 apples"."""


def normalize_answer(answer: str) -> str:
    """The canonical form of ``answer``, so that equal answers written differently vote together.

    * LaTeX presentation goes: ``$...$`` / ``\\(...\\)`` delimiters, ``\\text{}``, ``\\boxed{}``
      and similar wrappers, ``\\left``/``\\right``, spacing commands; ``\\frac{a}{b}``,
      ``\\dfrac`` and ``\\tfrac`` become ``a/b``.
    * Currency signs, a trailing ``%`` or degree sign, surrounding whitespace, markdown and
      quotes, trailing sentence punctuation go; whitespace inside collapses to single spaces.
    * Numbers become canonical decimals: "1,000", "1000.00", "+1000", "1000 dollars" all give
      "1000"; "2.50" gives "2.5"; ".5" gives "0.5"; a Unicode minus sign becomes "-".
      Fractions keep their form ("1/2"). "x = 5" gives "5".
    * Multiple-choice letters become a bare capital: "(B)", "(b)", "B)" give "B".

    Anything else is returned cleaned but otherwise as written. ``normalize_answer`` is
    idempotent: normalising a normalised answer changes nothing.
    """
    text = _strip_markup(_strip_latex(_normalize_characters(answer)))
    choice = _choice_letter(text)
    if choice is not None:
        return choice
    number = _as_number(text)
    if number is not None:
        return number
    assignment = _ASSIGNMENT.fullmatch(text)
    if assignment is not None:
        value = _as_number(assignment.group("value"))
        if value is not None:
            return value
    return text


def answers_agree(a: str | None, b: str | None) -> bool:
    """Whether two answers are the same once normalised. None, or an empty answer, never agrees."""
    if a is None or b is None:
        return False
    normalized = normalize_answer(a)
    return bool(normalized) and normalized == normalize_answer(b)


def _strip_latex(text: str) -> str:
    """``text`` without LaTeX presentation (wrappers unwrapped, fractions as ``a/b``, ...) and
    with its whitespace collapsed.

    Repeated until nothing changes, since removing one piece of markup can complete another
    (``\\te$xt{5}``, ``{,~}``); a pass only ever removes markup, never adds any, so the loop ends.
    """
    previous = None
    while text != previous:
        previous = text
        text = _replace_fractions(_unwrap_commands(text))
        for pattern, replacement in _LATEX_REPLACEMENTS:
            text = pattern.sub(replacement, text)
        text = _collapse_whitespace(text)
    return text


def _unwrap_commands(text: str) -> str:
    """``text`` with every ``\\text{x}``-like wrapper replaced by its content ``x``.

    Nested wrappers all go at once; a wrapper whose group never closes is left as it is.
    """
    braces = _brace_pairs(text)
    cuts: list[tuple[int, int]] = []
    for match in _WRAPPER_COMMAND.finditer(text):
        close = braces.get(match.end())
        if close is not None:
            cuts.append((match.start(), match.end() + 1))  # the command and its "{"
            cuts.append((close, close + 1))  # its "}"
    pieces: list[str] = []
    position = 0
    for start, end in sorted(cuts):
        pieces.append(text[position:start])
        position = end
    pieces.append(text[position:])
    return "".join(pieces)


def _replace_fractions(text: str) -> str:
    """``text`` with ``\\frac{a}{b}`` (also ``\\dfrac``, ``\\tfrac``, ``\\frac12``) as ``a/b``.

    A part that is not a single number or name is parenthesised: ``\\frac{x+1}{2}`` gives
    ``(x+1)/2``. Only innermost fractions are replaced, so nested ones take one call per level
    (:func:`_strip_latex` repeats until nothing changes). A fraction whose arguments cannot be
    read is left as it is.
    """
    braces = _brace_pairs(text)
    pieces: list[str] = []
    position = 0
    for match in _FRAC_COMMAND.finditer(text):
        if match.start() < position:  # inside a fraction already replaced
            continue
        numerator = _fraction_argument(text, match.end(), braces)
        if numerator is None:
            continue
        denominator = _fraction_argument(text, numerator[1], braces)
        if denominator is None:
            continue
        if _FRAC_COMMAND.search(numerator[0]) or _FRAC_COMMAND.search(denominator[0]):
            continue  # not innermost
        pieces.append(text[position : match.start()])
        pieces.append(f"{_fraction_part(numerator[0])}/{_fraction_part(denominator[0])}")
        position = denominator[1]
    pieces.append(text[position:])
    return "".join(pieces)


def _fraction_argument(text: str, start: int, braces: dict[int, int]) -> tuple[str, int] | None:
    """One argument of ``\\frac`` at ``start`` (after blanks) and the index after it.

    A ``{...}`` group (without its braces), a command such as ``\\pi``, or a single character.
    """
    position = start
    while position < len(text) and text[position].isspace():
        position += 1
    if position >= len(text) or text[position] == "}":
        return None
    if text[position] == "{":
        close = braces.get(position)
        return None if close is None else (text[position + 1 : close], close + 1)
    command = _LATEX_COMMAND_NAME.match(text, position)
    if command is not None:
        return command.group(), command.end()
    return text[position], position + 1


def _fraction_part(part: str) -> str:
    """A numerator or denominator, parenthesised unless atomic."""
    part = part.strip()
    return part if _ATOM.fullmatch(part) else f"({part})"


def _normalize_characters(text: str) -> str:
    """``text`` with look-alike Unicode characters (minus sign, no-break space) made ASCII."""
    for original, replacement in _UNICODE_REPLACEMENTS:
        text = text.replace(original, replacement)
    return text


def _collapse_whitespace(text: str) -> str:
    """``text`` with runs of whitespace as single spaces, none at its ends, none inside brackets
    or before commas: "( 1 , 2 )" gives "(1, 2)"."""
    return _BRACKET_SPACE.sub("", " ".join(text.split()))


def _strip_markup(text: str) -> str:
    """``text`` without currency signs, and without surrounding markdown, quotes, trailing
    punctuation and a trailing ``%`` or degree sign: "**$18**." gives "18"."""
    text = _CURRENCY_SIGNS.sub("", text)
    previous = None
    while text != previous:
        previous = text
        text = text.strip(_EDGE_CHARACTERS).rstrip(_TRAILING_PUNCTUATION).lstrip(":")
        text = _TRAILING_UNIT_MARK.sub("", text)
    return text


def _choice_letter(text: str) -> str | None:
    """The capital letter of a multiple-choice answer ("(b)", "B)", "(C) 12 apples"), or None."""
    match = _CHOICE_LETTER.fullmatch(text)
    if match is not None:
        return (match.group("paren") or match.group("bare")).upper()
    labelled = _LABELLED_CHOICE.fullmatch(text)
    return labelled.group("letter") if labelled is not None else None


def _as_number(text: str) -> str | None:
    """The canonical form of ``text`` if it is a number, possibly followed by units."""
    number = _canonical_number(text)
    if number is not None:
        return number
    with_unit = _NUMBER_WITH_UNIT.fullmatch(text)
    if with_unit is None or with_unit.group("unit").lower() in _NOT_UNITS:
        return None
    return _canonical_number(with_unit.group("number"))


def _canonical_number(text: str) -> str | None:
    """The canonical form of a bare number (decimal, thousands-grouped or fraction), or None.

    Decimals with a zero fractional part become integers ("1000.00" gives "1000"), others lose
    trailing zeros ("2.50" gives "2.5"); a fraction keeps its form with its sign in front.
    """
    match = _DECIMAL.fullmatch(text) or _GROUPED_DECIMAL.fullmatch(text)
    if match is not None:
        digits = match.group("digits").replace(",", "")
        return _canonical_decimal(Decimal(match.group("sign") + digits))
    fraction = _FRACTION.fullmatch(text)
    if fraction is not None:
        numerator = _strip_leading_zeros(fraction.group("numerator"))
        denominator = _strip_leading_zeros(fraction.group("denominator"))
        sign = "-" if fraction.group("sign") == "-" and numerator != "0" else ""
        return f"{sign}{numerator}/{denominator}"
    return None


def _canonical_decimal(value: Decimal) -> str:
    """``value`` as an integer if it is whole, else in plain notation without trailing zeros."""
    if value.is_zero():
        return "0"  # also for -0 and 0.000
    whole = value.to_integral_value()
    if value == whole:
        return format(whole, "f")
    return format(value, "f").rstrip("0")


def _strip_leading_zeros(digits: str) -> str:
    """A string of digits without leading zeros ("007" gives "7", "000" gives "0")."""
    return digits.lstrip("0") or "0"
