"""Training-row sampling of the category router's package sources (fake loaders, no packages read)."""

from __future__ import annotations

from collections import Counter

import pytest

from routers import sources
from routers.category_train import Example

pytestmark = pytest.mark.unit


def _rows(source: str, category: str, n: int) -> list[Example]:
    return [Example(id=f"{source}-{category}-{i}", text=f"{category} {i}", category=category, source=source)
            for i in range(n)]


def test_per_group_caps_each_dataset_and_category_and_keeps_every_group(monkeypatch):
    fake = {"benchmarks": lambda: _rows("mmlu/anatomy", "medicine", 30) + _rows("mmlu/law", "law", 5)
            + _rows("gsm8k", "math", 50),
            "user": lambda: _rows("user", "writing", 12)}
    monkeypatch.setattr(sources, "TRAIN_SOURCES", fake)
    monkeypatch.setattr(sources, "TRAIN_CAP", {})
    assert len(sources.train_rows()) == 97
    capped = sources.train_rows(per_group=10)
    groups = Counter((r.source.split("/")[0], r.category) for r in capped)
    assert groups == {("mmlu", "medicine"): 10, ("mmlu", "law"): 5, ("gsm8k", "math"): 10, ("user", "writing"): 10}
    assert [r.id for r in sources.train_rows(per_group=10)] == [r.id for r in capped]  # seeded


def test_a_fresh_draw_holds_none_of_the_shipped_rows_and_only_the_sampled_sources(monkeypatch, tmp_path):
    import json

    fake = {"big": lambda: _rows("big", "science", 40), "small": lambda: _rows("small", "law", 5)}
    monkeypatch.setattr(sources, "EVAL_SOURCES", fake)
    monkeypatch.setattr(sources, "EVAL_SAMPLE", {"big": 10})
    shipped = tmp_path / "shipped.jsonl"
    monkeypatch.setattr(sources, "EVAL_FILE", shipped)
    sources.write_eval(shipped)
    kept = {json.loads(line)["id"] for line in shipped.open()}
    assert len(kept) == 15  # 10 sampled + the small source whole
    fresh = tmp_path / "fresh.jsonl"
    sources.main(["--fresh", "--seed", "1", "--out", str(fresh)])
    rows = [json.loads(line) for line in fresh.open()]
    assert len(rows) == 10 and {r["source"] for r in rows} == {"big"} and not {r["id"] for r in rows} & kept
    with pytest.raises(SystemExit):  # the shipped file is never overwritten by a fresh draw
        sources.main(["--fresh"])


def test_package_sources_load_labelled_and_share_no_prompt_with_the_cross_source_test_set():
    """The real packages: the science/code sources added for real traffic load with their labels,
    and no training prompt (any source) appears in the shipped cross-source test set."""
    import json

    pytest.importorskip("pyarrow")
    new = {"qasper": "science", "sciq": "science", "openbookqa": "science", "mt_mbpp": "code"}
    for name, category in new.items():
        rows = sources.TRAIN_SOURCES[name]()
        assert len(rows) >= 300, name
        assert {r.category for r in rows} == {category}, name
    qasper = sources.TRAIN_SOURCES["qasper"]()[0]
    assert qasper.text.count("\n\n") >= 2  # title, abstract, question: a pasted paper, not a bare stem
    assert len({r.source.split("/")[0] for r in sources.mt_mbpp()}) == 1
    assert len({r.id.split("/")[0] for r in sources.mt_mbpp()}) == len(sources.MT_MBPP_LANGUAGES)
    lines = sources.EVAL_FILE.read_text(encoding="utf-8").split("\n")  # not splitlines: U+2028 inside prompts
    eval_texts = {json.loads(line)["question"].strip() for line in lines if line.strip()}
    train_texts = {r.text.strip() for r in sources.train_rows()}
    assert not train_texts & eval_texts


def test_real_code_traffic_sources_are_held_out_whole_or_sampled_with_templates_cut():
    """The code prompts users paste (shell tasks, bug-fix requests, app bug reports) are evaluation
    sources only; SWE-Lancer's contributor boilerplate and payment tags are cut, its report kept."""
    import json

    pytest.importorskip("pyarrow")
    swe = sources.swe_lancer()
    assert len(swe) == 463 and {r.category for r in swe} == {"code"}
    assert not any("contributing guidelines" in r.text[:300] or r.text.startswith("[") for r in swe)
    assert sum("Expected Result" in r.text for r in swe) > 300  # the bug report itself is kept
    for name in ("swe_lancer", "agent_bench_os", "ipi_coding_agent"):
        assert name in sources.EVAL_SOURCES and name not in sources.TRAIN_SOURCES
    shipped = Counter(json.loads(line)["source"] for line in
                      sources.EVAL_FILE.read_text(encoding="utf-8").split("\n") if line.strip())
    assert shipped["agent_bench_os"] == len(sources.agent_bench_os()) == 141
    assert shipped["ipi_coding_agent"] == len(sources.ipi_coding_agent()) == 45
    assert shipped["swe_lancer"] == 150


def test_chat_traffic_sources_are_labelled_held_out_and_shipped_whole():
    """Everyday assistant requests (PersistBench, hand-labelled) and web errands (Mind2Web) are
    evaluation sources only; every labelled query is in the shipped file with its label."""
    import json

    from skills.datasets import CATEGORIES

    rows = sources.persistbench()
    labels = {r.id: r.category for r in rows}
    assert len(rows) == 372 and set(labels.values()) <= set(CATEGORIES)
    assert labels["persistbench/beneficial_samples/3"] == "writing"  # "draft a short, heartfelt toast"
    assert labels["persistbench/cross_domain/0"] == "medicine"       # persistent heartburn, home remedies
    assert {r.category for r in sources.mind2web()} == {"general"} and len(sources.mind2web()) == 150
    for name in ("persistbench", "mind2web"):
        assert name in sources.EVAL_SOURCES and name not in sources.TRAIN_SOURCES
    shipped = [json.loads(line) for line in sources.EVAL_FILE.read_text(encoding="utf-8").split("\n") if line.strip()]
    assert {r["id"]: r["category"] for r in shipped if r["source"] == "persistbench"} == labels
    assert sum(r["source"] == "mind2web" for r in shipped) == 150
