"""Graph shapes on the fake backend (workers/backends/fake.py behind the real LocalDispatcher and
ModelPool): every built-in pipeline and branch graphs, asserting outputs, execution order,
sub-batch membership and one batch per model per node; the trace follows the answer's path."""

from __future__ import annotations

import re

import pytest

from orchestrator.config import ExpertRegistry
from orchestrator.context import RunContext
from orchestrator.core import Question
from orchestrator.executor import execute
from orchestrator.pipeline import Pipeline, builtin_pipelines
from orchestrator.testing import RecordingDispatcher
from workers.backends.fake import FakeBackend
from workers.dispatch import LocalDispatcher
from workers.pool import ModelPool

pytestmark = pytest.mark.unit

QUESTIONS = [Question(id="q0", text="What is 12 * 7?"), Question(id="q1", text="Write a haiku about rain."),
             Question(id="q2", text="What is 2 + 2?")]


def fake_answer(request, index: int) -> str:
    """Scripted model: decomposes q0 in two, agrees with itself on arithmetic, rambles on the haiku."""
    text = (request.messages or [{}])[-1].get("content") or request.prompt or ""
    if "sub-questions, one per line" in text:
        if "12 * 7" in text:
            return "1. What is 12 * 7 in tens?\n2. What is 12 * 7 in units?"
        return "1. What is 2 + 2?" if "2 + 2" in text else "1. Write a haiku about rain."
    if "12 * 7" in text:
        return "Answer: 84"
    if "2 + 2" in text:
        return "Answer: 4"
    return f"rain poem number {index} from {request.model}"


def recording() -> RecordingDispatcher:
    """The real LocalDispatcher and ModelPool over fake backends (kept in ``.backends``)."""
    backends: dict[str, FakeBackend] = {}

    def factory(spec):
        backends[spec.name] = FakeBackend(spec, answers=fake_answer)
        return backends[spec.name]

    disp = RecordingDispatcher(LocalDispatcher(ModelPool(ExpertRegistry.default().models, budget_gib=100,
                                                         backend_factory=factory)))
    disp.backends = backends
    return disp


FUSED = ("token_fusion", "latent_fusion")


def fixed_routers(pipe: Pipeline) -> Pipeline:
    """Built-ins with model-backed routers get a fixed one (routers have their own tests); fused
    pipelines fuse two models and latent fusion runs untrained (no fuser file in tests)."""
    data = pipe.to_dict()
    fused = any(n["type"] in FUSED for n in data["nodes"])
    for node in data["nodes"]:
        if node["type"] == "router" and (fused or node["params"]["router"] not in ("fixed", "keyword")):
            node["params"] = {"router": "fixed", "experts": ["generalist", "coder"]}
        if node["type"] == "latent_fusion":
            node["params"] = {**node["params"], "fuser": None, "max_tokens": 12}
        if node["type"] == "token_fusion":
            node["params"] = {**node["params"], "max_tokens": 12}
    return Pipeline.from_dict(data)


@pytest.fixture()
def fake_fusion_models(monkeypatch):
    """Fused groups run tiny random LMs (tests/workers/fusion_fakes.py) instead of the real models."""
    import workers.fusion.lm as lm_mod
    from tests.workers.fusion_fakes import fake_byte_bpe, fake_lm

    made: dict = {}
    monkeypatch.setattr(lm_mod, "load_lm", lambda spec, device="auto": made.setdefault(
        spec.name, fake_lm(fake_byte_bpe(), name=spec.name, seed=len(made))))


def run(pipe, questions=QUESTIONS):
    disp = recording()
    results = execute(pipe, questions, RunContext(registry=ExpertRegistry.default(), dispatcher=disp, run_id="r"))
    return results, disp


def members(results, node: str) -> list[str]:
    """Question (or sub-question) ids that passed through ``node`` on their answer's path."""
    return [s.question for r in results for s in r.trace.steps if s.node == node]


# (pipeline, execution order, {node: questions on the path through it}, answers)
BUILTINS = [
    ("symbolic-moe", ["input", "router", "experts", "aggregate", "output"],
     {"experts": ["q0", "q1", "q2"]}, ["Answer: 84", None, "Answer: 4"]),
    ("coe", ["input", "router", "experts", "aggregate", "output"], {"aggregate": ["q0", "q1", "q2"]},
     ["Answer: 84", None, "Answer: 4"]),
    ("ensemble-vote", ["input", "router", "experts", "vote", "output"], {"vote": ["q0", "q1", "q2"]}, ["84", None, "4"]),
    ("moa", ["input", "router", "round1", "round2", "aggregate", "output"],
     {"round1": ["q0", "q1", "q2"], "round2": ["q0", "q1", "q2"]}, [None, None, None]),
    ("cascade", ["input", "cheap_router", "cheap", "agree", "escalate", "router", "experts", "synthesis", "output"],
     {"cheap": ["q0", "q1", "q2"], "escalate": ["q0", "q1", "q2"], "router": ["q1"], "experts": ["q1"],
      "synthesis": ["q1"]}, ["84", None, "4"]),
    ("decomp", ["input", "decompose", "router", "experts", "compose", "output"],
     {"decompose": ["q0", "q1", "q2"], "experts": ["q0/1", "q0/2", "q1/1", "q2/1"], "compose": ["q0", "q1", "q2"]},
     [None, None, None]),
    ("token-fusion", ["input", "router", "fuse", "output"], {"fuse": ["q0", "q1", "q2"]}, [None, None, None]),
    ("latent-fusion", ["input", "router", "fuse", "output"], {"fuse": ["q0", "q1", "q2"]}, [None, None, None]),
]


def test_every_builtin_has_a_shape_row():
    assert sorted(b[0] for b in BUILTINS) == builtin_pipelines()


@pytest.mark.parametrize("name,order,through,answers", BUILTINS, ids=[b[0] for b in BUILTINS])
def test_builtin_shapes(name, order, through, answers, fake_fusion_models):
    compiled = fixed_routers(Pipeline.load(name)).compile()
    assert compiled.order == order
    results, disp = run(compiled)
    assert [r.id for r in results] == ["q0", "q1", "q2"] and all(r.status == "ok" for r in results)
    for node, ids in through.items():
        assert members(results, node) == ids, node
    for r, want in zip(results, answers):
        if want is not None:
            assert r.answer == want
        assert r.answer and r.aggregator == r.trace.aggregator
        assert [t.node for t in r.trace.timings][0] == "input" and r.trace.timings[-1].node == "output"
    steps = [(label, model) for label, model, _ in disp.batches]
    assert len(steps) == len(set(steps)), f"a model got two batches in one node: {disp.batches}"
    assert all(n == 1 for n in disp.model_loads().values())


def test_cascade_escalates_only_the_unsure_questions_and_merges_in_order():
    results, disp = run(Pipeline.load("cascade").compile())
    sure, unsure = results[0].trace, results[1].trace
    assert [s.node for s in sure.steps] == ["input", "cheap_router", "cheap", "agree", "escalate", "output"]
    assert sure.steps[4].part["escalated"] is False and sure.steps[4].part["confidence"] == 1.0
    assert unsure.steps[4].part["escalated"] is True and unsure.steps[4].part["confidence"] < 0.67
    assert results[1].aggregator == "synthesis" and results[1].answer.startswith("rain poem")
    assert [e.name for e in results[0].experts] == ["generalist"]  # the cheap branch answered q0
    assert len(results[1].experts) == 3  # the escalation router's k=3 answered q1
    assert [(m, len(reqs)) for label, m, reqs in disp.batches if label == "cheap"] == [("smollm2-135m", 3)]
    assert disp.backends["smollm2-135m"].batches[0][0].sampling.n == 3
    assert [len(reqs) for label, _, reqs in disp.batches if label == "aggregate"] == [1]  # only q1 is synthesised


def test_decomp_routes_sub_questions_batched_and_composes():
    results, disp = run(Pipeline.load("decomp").compile())
    q0 = results[0]
    assert q0.trace.steps[1].part["subquestions"] == ["What is 12 * 7 in tens?", "What is 12 * 7 in units?"]
    assert [s.question for s in q0.trace.steps if s.node == "router"] == ["q0/1", "q0/2"]
    assert q0.aggregator == "compose" and q0.trace.aggregator_model == "qwen-coder-0.5b"
    assert "compose skipped: the question was not decomposed" in results[1].trace.notes
    # four sub-questions of three questions: the experts node sends each model one batch
    expert_batches = [(m, len(reqs)) for label, m, reqs in disp.batches if label == "experts"]
    assert sum(n for _, n in expert_batches) == 4 and len({m for m, _ in expert_batches}) == len(expert_batches)
    assert [(m, len(r)) for label, m, r in disp.batches if label == "compose"] == [("qwen-coder-0.5b", 1)]  # q1, q2 kept whole


def test_moa_round2_reads_round1_answers():
    results, disp = run(Pipeline.load("moa").compile())
    round2 = [r for b in disp.backends.values() for batch in b.batches for r in batch if "/round2/" in r.key]
    assert round2 and all("Responses from other experts" in r.messages[-1]["content"] for r in round2)
    q0_round2 = next(r for r in round2 if r.key.startswith("r/q0/"))
    assert "Answer: 84" in q0_round2.messages[-1]["content"]
    step = next(s for s in results[0].trace.steps if s.node == "round2")
    assert step.part["references"] == 3


def _two_branches() -> Pipeline:
    """Branch A (keyword) answers; branch B (fixed) runs too but feeds nothing on the answer's path."""
    p = Pipeline("two-branches")
    for name, kind, params in [("input", "input", None), ("router_a", "router", {"router": "fixed", "experts": ["coder"]}),
                               ("experts_a", "experts", None), ("agg", "aggregator", {"aggregator": "vote"}),
                               ("router_b", "router", {"router": "fixed", "experts": ["physician"]}),
                               ("experts_b", "experts", None), ("output", "output", None)]:
        p.add_node(name, kind, params)
    for a, b in [("input.questions", "router_a.questions"), ("input.questions", "experts_a.questions"),
                 ("router_a.decisions", "experts_a.decisions"), ("input.questions", "agg.questions"),
                 ("experts_a.answers", "agg.answers"), ("agg.final", "output.final"),
                 ("input.questions", "router_b.questions"), ("input.questions", "experts_b.questions"),
                 ("router_b.decisions", "experts_b.decisions")]:
        p.connect(a, b)
    return p


def test_trace_reports_the_branch_that_produced_the_answer():
    results, disp = run(_two_branches().compile(), QUESTIONS[:1])
    assert [(m, len(r)) for label, m, r in disp.batches if label == "experts_b"] == [("smollm2-135m", 1)]  # B ran
    r = results[0]
    assert [e.name for e in r.experts] == ["coder"] and r.trace.router == "fixed"
    assert [a.expert for a in r.trace.answers] == ["coder"]
    assert "router_b" not in {s.node for s in r.trace.steps}


def test_tokens_are_counted_per_node_and_question():
    results, _ = run(Pipeline.load("moa").compile(), QUESTIONS[:2])
    for r in results:
        per_node = {s.node: (s.prompt_tokens, s.completion_tokens) for s in r.trace.steps}
        assert per_node["round1"][0] > 0 and per_node["round2"][0] > per_node["round1"][0]  # round 2 reads round 1
        assert r.trace.prompt_tokens == sum(p for p, _ in per_node.values())
        assert r.trace.completion_tokens == sum(c for _, c in per_node.values()) > 0
    assert results[0].trace.steps[2].completion_tokens != results[1].trace.steps[2].completion_tokens  # not shared


def test_sub_question_ids_in_keys_do_not_leak_between_questions():
    results, _ = run(Pipeline.load("decomp").compile())
    toks = {r.id: sum(s.completion_tokens for s in r.trace.steps if s.node == "experts") for r in results}
    assert toks["q0"] == 2 * toks["q2"] and toks["q1"] > 0


def test_nodes_record_their_own_trace_parts_by_name():
    results, _ = run(Pipeline.load("cascade").compile(), QUESTIONS[1:2])
    parts = {s.node: set(s.part) for s in results[0].trace.steps}
    assert {"routing"} <= parts["cheap_router"] and {"answers"} <= parts["cheap"]
    assert {"final"} <= parts["agree"] and {"escalated", "confidence", "threshold"} <= parts["escalate"]
    assert not parts["input"] and not parts["output"]
    assert re.fullmatch(r"[\d.]+", str(results[0].trace.steps[2].seconds))
