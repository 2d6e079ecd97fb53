"""Grade generated code by running its tests in a sandboxed subprocess with a time limit.

HumanEval gives a function prompt, a ``check(candidate)`` test and an entry point; MBPP gives
``assert`` lines. The candidate is the last fenced code block of the answer (else the whole
answer); for HumanEval the prompt is prepended when the answer does not define the entry point
itself. The program runs in a fresh ``python -I`` process in an empty temporary folder, with CPU,
memory and file-size limits (``resource``), no inherited environment and a wall-clock timeout.
This is a guard against accidents (an infinite loop, a huge allocation, stray files), not a
security boundary against hostile code.

Example::

    >>> run_tests("def add(a, b):\\n    return a + b", "assert add(2, 3) == 5").passed
    True
"""

from __future__ import annotations

import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass

_FENCE = re.compile(r"```[ \t]*(?:python|py)?[ \t]*\n(.*?)```", re.DOTALL | re.IGNORECASE)
MEMORY_BYTES = 512 << 20


@dataclass
class ExecResult:
    """Outcome of one test run: ``passed``, and why not (``timeout``, ``error``: last stderr line)."""

    passed: bool
    timeout: bool = False
    error: str = ""


def extract_code(answer: str) -> str:
    """The last fenced code block of ``answer`` (a block that is cut off counts), else the text."""
    blocks = _FENCE.findall(answer or "")
    if blocks:
        return blocks[-1]
    start = re.search(r"```[ \t]*(?:python|py)?[ \t]*\n", answer or "", re.IGNORECASE)
    return answer[start.end():] if start else (answer or "")


def humaneval_program(prompt: str, answer: str, test: str, entry_point: str) -> str:
    """The program that checks a HumanEval answer (prompt prepended unless the answer redefines it)."""
    code = extract_code(answer)
    if not re.search(rf"def\s+{re.escape(entry_point)}\s*\(", code):
        code = prompt + code
    return f"{code}\n\n{test}\n\ncheck({entry_point})\n"


def run_tests(code: str, tests: str, *, timeout_s: float = 10.0) -> ExecResult:
    """Run ``code`` followed by ``tests`` in a limited subprocess; passed when it exits 0 in time."""
    program = f"{code}\n\n{tests}\n"
    with tempfile.TemporaryDirectory(prefix="expertmix-exec-") as folder:
        try:
            proc = subprocess.run(
                [sys.executable, "-I", "-c", program], cwd=folder, env={"PATH": "/usr/bin:/bin"},
                capture_output=True, text=True, timeout=timeout_s, preexec_fn=_limits(timeout_s),
            )
        except subprocess.TimeoutExpired:
            return ExecResult(passed=False, timeout=True, error=f"timed out after {timeout_s:g} s")
    if proc.returncode == 0:
        return ExecResult(passed=True)
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    return ExecResult(passed=False, error=lines[-1][:200] if lines else f"exit code {proc.returncode}")


def _limits(timeout_s: float):
    def apply() -> None:
        import resource

        cpu = int(timeout_s) + 1
        resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu))
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BYTES, MEMORY_BYTES))
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 20, 1 << 20))

    return apply
