"""Keyword rules (Symbolic-MoE: <= 20 chars, >= 2 of 5 samples, lower case, periods stripped) and
the LLM extractor's batching over a fake-backend dispatcher."""

import pytest

from orchestrator.errors import ConfigError, UnknownNameError
from orchestrator.core import Question
from skills.extract import EXTRACTORS, LLMSkillExtractor, make_extractor
from skills.keywords import KeywordMapper, filter_keywords, load_skill_bank, normalize_keyword, parse_keywords
from tests.skills.fake_fleet import fake_ctx

pytestmark = pytest.mark.unit


def test_normalize_lowercases_and_strips_periods():
    assert normalize_keyword("  U.S. History. ") == "us history"
    assert normalize_keyword("**Algebra**") == "algebra"


def test_parse_keywords_reads_the_keywords_line():
    assert parse_keywords("Sure!\nKeywords: Algebra, Word Problems., geometry\nThanks") == [
        "algebra", "word problems", "geometry"]
    assert parse_keywords("anatomy; physiology") == ["anatomy", "physiology"]
    assert parse_keywords("") == []


def test_filter_keeps_keywords_in_two_of_five_samples():
    samples = [["algebra", "geometry"], ["Algebra."], ["probability"], ["geometry", "geometry"], ["calculus"]]
    # geometry twice in ONE sample votes once; it still has 2 samples
    assert filter_keywords(samples) == ["algebra", "geometry"]


def test_filter_drops_keywords_longer_than_twenty_chars():
    long = "a" * 21
    exact = "b" * 20
    assert filter_keywords([[long, exact], [long, exact], [long]]) == [exact]


def test_filter_orders_by_votes_then_first_seen():
    samples = [["x", "y"], ["y", "x"], ["y", "z"], ["z"], []]
    assert filter_keywords(samples) == ["y", "x", "z"]
    assert filter_keywords(samples, min_votes=3) == ["y"]


def test_skill_bank_ships_short_lowercase_keywords():
    bank = load_skill_bank()
    assert len(bank) >= 200
    assert all(len(kw) <= 20 and kw == kw.lower() for kw in bank)
    assert {"anatomy", "algebra", "pharmacology", "python"} <= set(bank)


def test_skill_bank_missing_file_raises(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        load_skill_bank(tmp_path / "nope.txt")


def test_mapper_keeps_known_keywords_without_embedding():
    mapper = KeywordMapper(["algebra", "anatomy"], embedder=object())  # an embedder would fail if called
    assert mapper.map(["Algebra", "anatomy", "algebra"]) == ["algebra", "anatomy"]


SAMPLES = ["Keywords: Algebra., geometry", "Keywords: algebra, number theory", "Keywords: Geometry",
           "Keywords: an extremely long keyword here, probability", "Keywords: probability, algebra"]


def test_llm_extractor_one_batch_with_n_samples_and_voting():
    ctx, fleet = fake_ctx(lambda req, i: SAMPLES[i])
    qs = [Question(id=f"q{i}", text=f"question {i}") for i in range(3)]
    out = LLMSkillExtractor(model="m1").extract(qs, ctx)
    assert out == [["algebra", "geometry", "probability"]] * 3
    batches = [b for fake in fleet.made for b in fake.batches]
    assert len(batches) == 1 and len(batches[0]) == 3  # one batch, one request (n=5) per question
    req = batches[0][0]
    assert req.sampling.n == 5 and req.sampling.temperature == 0.7
    assert "Keywords: <keyword1>" in req.messages[-1]["content"]


def test_llm_extractor_one_request_per_sample_without_n():
    ctx, fleet = fake_ctx(lambda req, i: SAMPLES[int(req.key.rsplit("/", 1)[1])])
    out = LLMSkillExtractor(model="m1", use_n=False).extract([Question(id="q", text="t")], ctx)
    assert out == [["algebra", "geometry", "probability"]]
    (batch,) = [b for fake in fleet.made for b in fake.batches]
    assert len(batch) == 5 and {r.sampling.n for r in batch} == {1}
    assert len({r.sampling.seed for r in batch}) == 5  # each sample its own seed


def test_llm_extractor_defaults_to_aggregator_model_and_accepts_expert():
    ctx, _ = fake_ctx(lambda req, i: "Keywords: x")
    assert LLMSkillExtractor().resolve_model(ctx) == "m2"
    assert LLMSkillExtractor(expert="beta").resolve_model(ctx) == "m1"
    with pytest.raises(UnknownNameError, match="unknown model 'nope'"):
        LLMSkillExtractor(model="nope").resolve_model(ctx)


def test_extractor_registry_and_bad_settings():
    assert {"llm", "embedding"} <= set(EXTRACTORS.names())
    with pytest.raises(UnknownNameError, match="unknown skill extractor"):
        make_extractor("tfidf")
    with pytest.raises(ConfigError, match="min_votes"):
        LLMSkillExtractor(samples=5, min_votes=6)


def test_echoed_prompt_examples_are_dropped_unless_the_question_supports_them():
    echo = "Keywords: psychology, virology, algebra"
    ctx, _ = fake_ctx(lambda req, i: echo)
    q = [Question(id="q", text="Solve 2x = 4 with algebra."), Question(id="v", text="How does a virus replicate? virology")]
    assert LLMSkillExtractor(model="m1").extract(q, ctx) == [["algebra"], ["virology", "algebra"]]
    assert LLMSkillExtractor(model="m1", drop_echoed_examples=False).extract(q[:1], ctx) == [
        ["psychology", "virology", "algebra"]]
