"""Skill extraction on real parts: the LLM way on the real SmolLM2 engine (shared pool), the
embedding way and keyword mapping on the real all-MiniLM-L6-v2 model."""

import time

import pytest

from orchestrator.config import ExpertRegistry
from orchestrator.context import RunContext
from orchestrator.core import Question
from skills.extract import EXAMPLE_KEYWORDS, EmbeddingSkillExtractor, LLMSkillExtractor
from skills.keywords import KeywordMapper
from workers.dispatch import LocalDispatcher

pytestmark = pytest.mark.integration

# SmolLM2-135M mostly copies the prompt's example keywords (measured); Qwen-Coder-0.5B follows it.
EXTRACTOR_MODEL = "qwen-coder-0.5b"

QUESTIONS = [
    Question(id="math", text="Solve for x: 3x + 7 = 22. What is x?"),
    Question(id="med", text="Which drug is the first-line treatment for type 2 diabetes?"),
    Question(id="code", text="Write a Python function that reverses a linked list."),
]


def test_llm_extraction_on_a_real_local_model(real_pool):
    ctx = RunContext(registry=ExpertRegistry.default(), dispatcher=LocalDispatcher(real_pool), seed=0)
    before = sum(real_pool.loads.values())
    t0 = time.perf_counter()
    out = LLMSkillExtractor(model=EXTRACTOR_MODEL).extract(QUESTIONS, ctx)
    print(f"llm extraction: {len(QUESTIONS)} questions x 5 samples in {time.perf_counter() - t0:.1f}s: {out}")
    assert len(out) == len(QUESTIONS)
    assert all(kw == kw.lower() and "." not in kw and 0 < len(kw) <= 20 for kws in out for kw in kws)
    assert sum(bool(kws) for kws in out) >= 2  # 2-of-5 agreement holds for most clear questions
    assert not set(out[0]) & set(EXAMPLE_KEYWORDS)  # nothing merely copied from the prompt's examples
    assert sum(real_pool.loads.values()) - before <= 1  # one batch, at most one load
    assert not ctx.notes  # the vLLM backend returned all 5 samples of each n=5 request


def test_embedding_extractor_picks_fitting_skills():
    ext = EmbeddingSkillExtractor(top_n=3)
    t0 = time.perf_counter()
    ext.load()
    out = ext.extract_texts([q.text for q in QUESTIONS])
    print(f"embedding extraction: load+3 questions {time.perf_counter() - t0:.2f}s: {out}")
    assert {"algebra", "equations"} & set(out[0])
    assert {"pharmacology", "treatment", "medicine"} & set(out[1])
    assert "python" in out[2]


def test_keyword_mapping_goes_to_the_nearest_profile_keyword():
    mapper = KeywordMapper(["anatomy", "algebra", "contract law", "python"])
    assert mapper.map(["skeletal system", "linear equations", "legal agreements", "programming", "algebra"]) == [
        "anatomy", "algebra", "contract law", "python"]
