"""Answer extraction and grading: a table of real-looking completions per answer type."""

import pytest

from orchestrator.errors import InputError
from skills.grading import detect_answer_type, extract_answer, format_choices, is_correct, normalize_gold

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    ("text", "answer_type", "expected"),
    [
        ("The answer is (b).", "choice", "B"),
        ("B. Paris is the capital.", "choice", "B"),
        ("Let me think.\nAnswer: C", "choice", "C"),
        ("Reasoning...\nD\n", "choice", "D"),
        ("The correct option is A because ...", "choice", "A"),
        ("First (A) looks right, but the answer is (C).", "choice", "C"),
        ("\\boxed{E}", "choice", "E"),
        ("the answer is a cat", "choice", None),
        ("no letter here", "choice", None),
        ("3 + 4 = 7 apples.\n#### 7", "number", "7"),
        ("She has 1,200 dollars. Answer: $1,200.", "number", "1200"),
        ("so it costs 3.50 each", "number", "3.5"),
        ("The answer is 12. Then 5 more were sold.", "number", "12"),
        ("we get \\boxed{-4}", "number", "-4"),
        ("2 apples plus 3 apples is 5 apples", "number", "5"),
        ("nothing numeric", "number", None),
        ("so $x = \\boxed{\\dfrac{1}{2}}$", "boxed", "\\frac{1}{2}"),
        ("\\boxed{\\frac12}", "boxed", "\\frac{1}{2}"),
        ("\\boxed{x = 5}", "boxed", "5"),
        ("\\boxed{90^\\circ}", "boxed", "90"),
        ("\\boxed{\\left( 1, 2 \\right)}", "boxed", "(1,2)"),
        ("Final answer: \\sqrt2", "boxed", "\\sqrt{2}"),
        ("", "boxed", None),
    ],
)
def test_extract_answer_table(text, answer_type, expected):
    assert extract_answer(text, answer_type) == expected


@pytest.mark.parametrize(
    ("text", "gold", "answer_type", "correct"),
    [
        ("The answer is (b).", 1, "choice", True),
        ("The answer is (b).", "B", "choice", True),
        ("The answer is (b).", 0, "choice", False),
        ("Answer: 1200", "1,200", "number", True),
        ("Answer: 1200.0", "1200", "number", True),
        ("Answer: 1201", "1200", "number", False),
        ("\\boxed{\\frac{1}{2}}", "0.5", "boxed", True),
        ("\\boxed{1/2}", "\\frac{1}{2}", "boxed", True),
        ("\\boxed{\\frac{1}{3}}", "\\frac{1}{2}", "boxed", False),
        ("I cannot tell", "A", "choice", False),
    ],
)
def test_is_correct_table(text, gold, answer_type, correct):
    assert is_correct(text, gold, answer_type) is correct


def test_choice_text_quoted_instead_of_letter_counts_with_choices():
    assert is_correct("It is the mitochondria.", "C", "choice", choices=["nucleus", "ribosome", "mitochondria"])


def test_unknown_answer_type_and_bad_gold_raise_with_hint():
    with pytest.raises(InputError, match="unknown answer_type 'essay'.*use one of"):
        extract_answer("x", "essay")
    with pytest.raises(InputError, match="not a choice letter"):
        normalize_gold("Paris", "choice")
    with pytest.raises(InputError, match="out of range"):
        normalize_gold(12, "choice")


def test_detect_answer_type():
    assert detect_answer_type(format_choices("Which is a fruit?", ["apple", "car"])) == "choice"
    assert detect_answer_type("Compute $\\frac{1}{2} + 1$.") == "boxed"
    assert detect_answer_type("Tom has 3 apples and buys 4 more. How many?") == "number"


def test_a_reply_that_only_echoes_the_options_states_no_answer():
    echoed = "A. first pharyngeal arch.\nB. second pharyngeal arch.\nC. third pharyngeal arch."
    assert extract_answer(echoed, "choice") is None
    assert extract_answer(echoed + "\n\nThe correct answer is: C. third", "choice") == "C"


def test_boolean_and_exact_answers():
    assert extract_answer("No, they are different birds.", "boolean") == "no"
    assert extract_answer("Reasoning... Answer: True", "boolean") == "yes"
    assert is_correct("Answer: yes", "true", "boolean") and not is_correct("Answer: no", "yes", "boolean")
    assert is_correct("Answer: The Eiffel Tower.", "eiffel tower", "exact")
    assert not is_correct("Answer: Big Ben", "eiffel tower", "exact")
    with pytest.raises(InputError, match="not a boolean"):
        normalize_gold("maybe", "boolean")


def test_code_runs_in_a_limited_subprocess():
    from skills.code_exec import extract_code, humaneval_program, run_tests

    assert run_tests("def add(a, b):\n    return a + b", "assert add(2, 3) == 5").passed
    assert run_tests("def add(a, b):\n    return a - b", "assert add(2, 3) == 5").error == "AssertionError"
    assert run_tests("while True: pass", "", timeout_s=1).timeout
    assert run_tests("x = bytearray(10**10)", "").error == "MemoryError"
    assert extract_code("Sure:\n```python\ndef f():\n    return 1\n```\nDone.") == "def f():\n    return 1\n"
    prog = humaneval_program("def inc(x):\n", "    return x + 1\n", "def check(c):\n    assert c(1) == 2", "inc")
    assert run_tests(prog, "").passed


def test_a_degenerate_run_of_digits_is_no_number_not_a_crash():
    """A small model once generated hundreds of 9s; float() gives inf and int(inf) raised,
    which stopped a whole profiling run."""
    assert extract_answer("The answer is " + "9" * 400, "number") is None
    assert not is_correct("Answer: " + "9" * 400, "36", "number")
    assert extract_answer("Answer: 36", "number") == "36"


def test_reciting_the_options_is_not_choosing_the_last_one():
    choices = ["underwater", "the 6th dimension", "distant solar systems", "space"]
    listing = "A. underwater\nB. the 6th dimension\nC. distant solar systems\nD. space"
    assert extract_answer(listing, "choice", choices=choices) is None
    assert extract_answer(listing + "\n\nThe correct answer is: D. space", "choice", choices=choices) == "D"
    assert extract_answer("A. underwater\nB. x\n\nIt happens in space.", "choice", choices=choices) == "D"
