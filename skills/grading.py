"""Answer extraction and grading: multiple choice, numeric (GSM8K style) and ``\\boxed{}`` (MATH).

Expert profiles and the majority-vote aggregator both need one answer string out of a free-form,
often chain-of-thought, completion. ``answer_type`` is one of :data:`ANSWER_TYPES`:

- ``"choice"``: a letter A-J (gold may be a letter or a 0-based index),
- ``"number"``: the ``#### X`` / ``Answer: X`` / ``\\boxed{X}`` value, else the last number,
- ``"boxed"``: the last ``\\boxed{...}`` (simple LaTeX normalised), else ``Answer: X``,
- ``"boolean"``: ``yes`` / ``no`` (true/false count), the stated answer first, else the first word,
- ``"exact"``: the ``Answer: X`` line (else the first line), normalised text (case, punctuation,
  articles); it matches a gold answer equal to it or contained in it as a whole phrase.

Example::

    >>> extract_answer("3 + 4 = 7 apples.\\n#### 7", "number")
    '7'
    >>> is_correct("The answer is (b).", 1, "choice")
    True
    >>> is_correct("so $x = \\\\boxed{\\\\dfrac{1}{2}}$", "0.5", "boxed")
    True
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

from orchestrator.errors import InputError

ANSWER_TYPES = ("choice", "number", "boxed", "boolean", "exact")
LETTERS = "ABCDEFGHIJ"

_NUM = r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+"
_CHOICE_PATTERNS = [
    # explicit statements win over incidental letters, later statements over earlier ones;
    # a bare lower-case letter only counts in parentheses ("the answer is a cat" is not "A")
    re.compile(r"(?i:answer)\s*(?i:is|:)?\s*(?i:option|choice)?\s*:?\s*(?:\(([A-Ja-j])\)|([A-J])\b)"),
    re.compile(r"\\boxed\{\s*\(?([A-J])\)?\s*\}"),
    re.compile(r"(?i:option|choice)\s*(?i:is\s*)?:?\s*(?:\(([A-Ja-j])\)|([A-J])\b)"),
    re.compile(r"^\s*\(?([A-J])\)?\s*[.):]?\s*$", re.MULTILINE),  # a letter alone on a line
    re.compile(r"\A\s*\(?([A-J])[.):](?:\s|$)"),  # the reply starts with "B." / "(B)"
    re.compile(r"\(([A-J])\)"),
]
_ANSWER_LINE = re.compile(r"(?:final answer|answer)\s*(?:is|:)\s*:?\s*(.+)", re.IGNORECASE)
_CHOICE_LINE = re.compile(r"^\s*\(?([A-J])[.)]\s+\S", re.MULTILINE)
_CHOICE_LINE_WHOLE = re.compile(r"^\s*\(?[A-J][.)]\s+\S.*$", re.MULTILINE)


def check_answer_type(answer_type: str) -> str:
    """Return ``answer_type`` or raise :class:`InputError` naming the valid ones."""
    if answer_type not in ANSWER_TYPES:
        raise InputError(f"unknown answer_type {answer_type!r}", hint=f"use one of: {', '.join(ANSWER_TYPES)}")
    return answer_type


def extract_answer(text: str | None, answer_type: str, *, choices: list[str] | None = None) -> str | None:
    """The answer stated in ``text`` in canonical form, or ``None`` when it states none.

    Canonical forms: an upper-case letter for ``choice``; a plain decimal (no commas, no trailing
    zeros) for ``number``; normalised LaTeX for ``boxed``. ``choices`` (option texts) lets a
    ``choice`` answer that quotes an option instead of naming its letter still count.
    """
    check_answer_type(answer_type)
    if not text:
        return None
    if answer_type == "choice":
        return _extract_choice(text, choices)
    if answer_type == "number":
        return _extract_number(text)
    if answer_type == "boolean":
        return _extract_boolean(text)
    if answer_type == "exact":
        return _extract_exact(text)
    return _extract_boxed(text)


def normalize_gold(gold: object, answer_type: str) -> str:
    """A gold label in the canonical form :func:`extract_answer` produces (index 1 -> ``"B"``)."""
    check_answer_type(answer_type)
    if answer_type == "choice":
        if isinstance(gold, int) or (isinstance(gold, str) and gold.strip().isdigit()):
            idx = int(gold)
            if not 0 <= idx < len(LETTERS):
                raise InputError(f"choice index {idx} is out of range", hint="use 0-9 or a letter A-J")
            return LETTERS[idx]
        letter = str(gold).strip().strip("().").upper()
        if len(letter) != 1 or letter not in LETTERS:
            raise InputError(f"gold answer {gold!r} is not a choice letter", hint="use a letter A-J or an index")
        return letter
    if answer_type == "number":
        return _canonical_number(str(gold)) or str(gold).strip()
    if answer_type == "boolean":
        value = _extract_boolean(str(gold))
        if value is None:
            raise InputError(f"gold answer {gold!r} is not a boolean", hint="use yes/no or true/false")
        return value
    if answer_type == "exact":
        return normalize_text(str(gold))
    return normalize_latex(str(gold))


def is_correct(text: str | None, gold: object, answer_type: str, *, choices: list[str] | None = None) -> bool:
    """Whether the answer extracted from ``text`` matches ``gold``."""
    got = extract_answer(text, answer_type, choices=choices)
    if got is None:
        return False
    want = normalize_gold(gold, answer_type)
    if got == want:
        return True
    if answer_type == "exact":
        return bool(want) and f" {want} " in f" {got} "
    if answer_type in ("number", "boxed"):
        a, b = _as_fraction(got), _as_fraction(want)
        return a is not None and b is not None and abs(float(a) - float(b)) < 1e-6
    return False


def detect_answer_type(question_text: str) -> str:
    """Guess the answer type of an unlabelled question: options listed -> ``choice``, LaTeX -> ``boxed``."""
    if len(set(_CHOICE_LINE.findall(question_text))) >= 2:
        return "choice"
    if re.search(r"\\(?:frac|sqrt|boxed|pi|cdot)|\$[^$]+\$", question_text):
        return "boxed"
    return "number"


def format_choices(question: str, choices: list[str]) -> str:
    """A multiple-choice question text with lettered options (the form the graders expect)."""
    lines = [question.strip(), *(f"{LETTERS[i]}. {str(c).strip()}" for i, c in enumerate(choices))]
    return "\n".join(lines)


# ---- choice ------------------------------------------------------------------------------
def _extract_choice(text: str, choices: list[str] | None) -> str | None:
    echoes_options = len(set(_CHOICE_LINE.findall(text))) >= 2  # "A. x\nB. y" is a list, not an answer
    for pattern in _CHOICE_PATTERNS:
        if echoes_options and pattern in (_CHOICE_PATTERNS[3], _CHOICE_PATTERNS[4]):
            continue
        hits = pattern.findall(text)
        if hits:
            last = hits[-1]
            letter = "".join(last) if isinstance(last, tuple) else last
            return letter.upper()
    if choices:
        if echoes_options:  # quoting an option counts; reciting the list of options does not
            text = _CHOICE_LINE_WHOLE.sub("", text)
        lowered = text.lower()
        found = [(lowered.rfind(str(c).strip().lower()), i) for i, c in enumerate(choices) if str(c).strip()]
        found = [(pos, i) for pos, i in found if pos >= 0]
        if found:
            return LETTERS[max(found)[1]]
    return None


# ---- boolean and exact text --------------------------------------------------------------
_BOOL = {"yes": "yes", "true": "yes", "correct": "yes", "no": "no", "false": "no", "incorrect": "no"}
_BOOL_WORD = re.compile(r"\b(yes|no|true|false|correct|incorrect)\b", re.IGNORECASE)


def _extract_boolean(text: str) -> str | None:
    for source in (*reversed(_ANSWER_LINE.findall(text)), text.strip()[:40]):
        m = _BOOL_WORD.search(source)
        if m:
            return _BOOL[m.group(1).lower()]
    m = _BOOL_WORD.search(text)
    return _BOOL[m.group(1).lower()] if m else None


def normalize_text(s: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (SQuAD-style answer normalisation)."""
    s = re.sub(r"[^\w\s]", " ", s.lower())
    return " ".join(w for w in s.split() if w not in ("a", "an", "the"))


def _extract_exact(text: str) -> str | None:
    lines = _ANSWER_LINE.findall(text)
    raw = lines[-1] if lines else next((ln for ln in text.strip().splitlines() if ln.strip()), "")
    return normalize_text(raw.strip().split("\n")[0]) or None


# ---- numbers -----------------------------------------------------------------------------
def _extract_number(text: str) -> str | None:
    for marker in (r"####\s*(.+)", r"\\boxed\{([^{}]*)\}"):
        hits = re.findall(marker, text)
        if hits:
            num = _first_number(hits[-1])
            if num is not None:
                return num
    lines = _ANSWER_LINE.findall(text)
    if lines:
        num = _first_number(lines[-1])
        if num is not None:
            return num
    nums = re.findall(_NUM, text)
    return _canonical_number(nums[-1]) if nums else None


def _first_number(text: str) -> str | None:
    m = re.search(_NUM, text)
    return _canonical_number(m.group(0)) if m else None


def _canonical_number(raw: str) -> str | None:
    s = raw.strip().replace(",", "").replace("$", "").rstrip(".")
    try:
        value = float(s)
    except ValueError:
        return None
    if not math.isfinite(value):  # a run of hundreds of digits (a degenerate generation) is no answer
        return None
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6f}".rstrip("0").rstrip(".")


# ---- boxed / LaTeX -------------------------------------------------------------------------
def last_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` (or ``\\fbox{...}``), braces matched."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j]
    return None


def _extract_boxed(text: str) -> str | None:
    boxed = last_boxed(text)
    if boxed is not None:
        return normalize_latex(boxed)
    lines = _ANSWER_LINE.findall(text)
    if lines:
        return normalize_latex(lines[-1].strip().split("\n")[0])
    return None


_LATEX_DROP = ("\\left", "\\right", "\\!", "\\,", "\\;", "\\:", "\\displaystyle", "$", "^\\circ", "^{\\circ}", "\\%", "%")


def normalize_latex(s: str) -> str:
    """Simple LaTeX normalisation so equal answers compare equal (``\\dfrac12`` == ``\\frac{1}{2}``)."""
    s = s.strip()
    s = re.sub(r"\\text\{\s*([^{}]*)\}", r"\1", s)
    s = re.sub(r"\\mbox\{\s*([^{}]*)\}", r"\1", s)
    for token in _LATEX_DROP:
        s = s.replace(token, "")
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\frac\{([^{}]*)\}(\d)", r"\\frac{\1}{\2}", s)
    s = re.sub(r"\\sqrt(\w)", r"\\sqrt{\1}", s)
    s = s.replace(" ", "").rstrip(".")
    s = re.sub(r"^[a-zA-Z]\s*=", "", s)  # "x=5" -> "5"
    if re.fullmatch(r"\{[^{}]*\}", s):
        s = s[1:-1]
    return s


def _as_fraction(s: str) -> Fraction | None:
    s = s.replace(",", "")
    m = re.fullmatch(r"(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}", s)
    try:
        if m:
            return Fraction(int(m.group(2)), int(m.group(3))) * (-1 if m.group(1) else 1)
        if re.fullmatch(r"-?\d+/\d+", s):
            return Fraction(s)
        return Fraction(s) if re.fullmatch(_NUM, s) else None
    except (ValueError, ZeroDivisionError):
        return None
