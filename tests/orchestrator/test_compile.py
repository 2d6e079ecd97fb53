"""Compile (ports declared once, cycles, levels, run policy), per-question failure isolation,
retries and timeouts, a joint-generation node without special cases, and how names and paths
load (fakes only)."""

from __future__ import annotations

import time

import pytest

from orchestrator.config import ExpertRegistry
from orchestrator.context import RunContext
from orchestrator.core import (
    NODE_TYPES,
    Aggregated,
    Decisions,
    Finals,
    Node,
    PortType,
    Question,
    Questions,
    check_question,
    node_ports,
)
from orchestrator.errors import BackendError, ConfigError, InputError, PipelineValidationError, UnknownNameError
from orchestrator.executor import execute
from orchestrator.faces import cli
from orchestrator.nodes import ExpertsNode
from orchestrator.pipeline import Pipeline
from tests.fakes import FakeDispatcher

pytestmark = pytest.mark.unit

EIGHT = [Question(id=f"q{i}", text=f"What is {i} + {i}?") for i in range(8)]


def vote_pipeline(**experts_params) -> Pipeline:
    data = Pipeline.load("ensemble-vote").to_dict()
    data["nodes"][1]["params"] = {"router": "fixed", "experts": ["generalist"]}
    data["nodes"][2]["params"] = experts_params
    return Pipeline.from_dict(data)


def ctx_for(dispatcher) -> RunContext:
    return RunContext(registry=ExpertRegistry.default(), dispatcher=dispatcher, run_id="r")


# ---- ports ---------------------------------------------------------------------------------------
def test_ports_come_from_the_run_signature_once():
    inputs, outputs, optional = node_ports(ExpertsNode)
    assert {p: t.name for p, t in inputs.items()} == {"questions": "questions", "decisions": "decisions",
                                                      "references": "answers"}
    assert optional == {"references"} and outputs == {"answers": PortType("answers")}


def test_a_run_parameter_without_a_port_type_is_named():
    class Bad(Node):
        outputs = {"final": Finals}

        def run(self, ctx, *, questions: int) -> dict:
            return {}

    with pytest.raises(TypeError, match=r"Bad.run parameter 'questions': .* is not a port type"):
        node_ports(Bad)


def _drop(to):
    return lambda edges: [e for e in edges if e["to"] != to]


BROKEN = [
    # (label, built-in, edit of its edges, error): each row breaks exactly one rule
    ("required input unfed", "moa", _drop("round2.decisions"), r"node 'round2' input 'decisions' is not connected"),
    # two experts rounds reading each other's answers: every edge well typed, every input fed
    ("well-typed cycle", "moa", lambda e: [*e, {"from": "round2.answers", "to": "round1.references"}],
     r"has a cycle: round1 -> round2 -> round1.*fix: remove one edge"),
    ("questions and sub-questions mixed", "decomp",
     lambda e: [*_drop("experts.questions")(e), {"from": "input.questions", "to": "experts.questions"}],
     r"node 'experts' mixes questions and sub-questions"),
    ("two edges into a non-merging input", "ensemble-vote",
     lambda e: [*e, {"from": "input.questions", "to": "vote.questions"}], r"input 'questions' has 2 edges"),
]


@pytest.mark.parametrize("label,name,edit,match", BROKEN, ids=[b[0] for b in BROKEN])
def test_compile_rejects(label, name, edit, match):
    data = Pipeline.load(name).to_dict()
    data["edges"] = edit(data["edges"])
    with pytest.raises(PipelineValidationError, match=match):
        Pipeline.from_dict(data).compile()


def test_an_optional_input_may_stay_unconnected():
    assert "references" not in Pipeline.load("symbolic-moe").compile().wiring["experts"]


def test_compile_builds_each_node_once_and_validate_reuses_it(monkeypatch):
    built = []
    original = ExpertsNode.__init__
    monkeypatch.setattr(ExpertsNode, "__init__", lambda self, *a, **k: built.append(1) or original(self, *a, **k))
    pipe = Pipeline.load("moa")
    compiled = pipe.validate().compile()
    assert compiled is pipe.compile() and len(built) == 2  # round1 and round2, once each
    assert set(compiled.nodes) == set(compiled.order) and compiled.wiring["round2"]["references"] == [("round1", "answers")]


# ---- failures stay with their question ----------------------------------------------------------------
def poisoned(bad: str = "3 + 3"):
    def reply(req):
        if bad in req.messages[-1]["content"]:
            raise BackendError("engine could not tokenize the prompt")
        return "Answer: 2"
    return FakeDispatcher(reply)


def test_a_failing_question_fails_alone():
    disp = poisoned()
    results = execute(vote_pipeline(), EIGHT, ctx_for(disp))
    assert [r.status for r in results] == ["ok"] * 3 + ["error"] + ["ok"] * 4
    bad = results[3]
    assert bad.error == "node 'experts' (experts): BackendError: engine could not tokenize the prompt"
    assert bad.error_type == "backend_error" and bad.answer == "" and "\n" not in bad.error
    assert [s.status for s in bad.trace.steps] == ["ok", "ok", "error"]
    assert all(r.answer == "2" for r in results if r.id != "q3")
    sizes = [n for _, _, n in disp.batches]
    assert sizes[0] == 8 and sum(sizes[1:]) < 8 * 4  # the whole batch, then halves around the bad one


def test_an_unexpected_exception_is_a_one_line_error_without_internals():
    def reply(req):
        raise RuntimeError("secret connection string")
    results = execute(vote_pipeline(), EIGHT[:2], ctx_for(FakeDispatcher(reply)))
    assert {r.status for r in results} == {"error"}
    assert results[0].error == "node 'experts' (experts): internal error (RuntimeError); the log has the traceback"


def test_configuration_errors_still_raise():
    data = vote_pipeline().to_dict()
    data["nodes"][1]["params"] = {"router": "fixed", "experts": ["nobody"]}
    with pytest.raises(ConfigError, match="unknown expert 'nobody'"):
        execute(Pipeline.from_dict(data), EIGHT[:2], ctx_for(FakeDispatcher()))


class Flaky(FakeDispatcher):
    def __init__(self, failures: int, transient: bool = True) -> None:
        super().__init__(lambda r: "Answer: 2")
        self.failures, self.transient, self.calls = failures, transient, 0

    def run_batches(self, groups, **kw):
        self.calls += 1
        if self.calls <= self.failures:
            raise BackendError("worker restarted", transient=self.transient)
        return super().run_batches(groups, **kw)


def test_retry_policy_retries_transient_errors():
    pipe = vote_pipeline(retry={"max_attempts": 3, "initial_interval": 0, "jitter": False})
    disp = Flaky(failures=2)
    results = execute(pipe, EIGHT[:4], ctx_for(disp))
    assert all(r.status == "ok" for r in results) and disp.calls == 3
    assert next(s for s in results[0].trace.steps if s.node == "experts").attempts == 3


def test_non_transient_errors_are_not_retried_unless_retry_on_any():
    disp = Flaky(failures=1, transient=False)
    execute(vote_pipeline(retry={"max_attempts": 3, "initial_interval": 0}), EIGHT[:1], ctx_for(disp))
    assert disp.calls == 1
    disp = Flaky(failures=1, transient=False)
    results = execute(vote_pipeline(retry={"max_attempts": 2, "initial_interval": 0, "retry_on": "any"}),
                      EIGHT[:1], ctx_for(disp))
    assert disp.calls == 2 and results[0].status == "ok"


def test_timeout_fails_the_node_s_questions_and_says_so():
    class Slow(FakeDispatcher):
        def run_batches(self, groups, **kw):
            time.sleep(0.5)
            return super().run_batches(groups, **kw)

    t0 = time.perf_counter()
    results = execute(vote_pipeline(timeout_s=0.05), EIGHT[:2], ctx_for(Slow()))
    assert time.perf_counter() - t0 < 0.4
    assert {r.status for r in results} == {"error"}
    assert "NodeTimeoutError: node 'experts' ran past its timeout_s=0.05" in results[0].error


@pytest.mark.parametrize("params,match", [
    ({"retry": {"max_attempts": 0}}, r"retry.max_attempts: Input should be greater than or equal to 1"),
    ({"retry": {"tries": 2}}, r"retry.tries: Extra inputs are not permitted"),
    ({"retry": 3}, r"retry must be a mapping"),
    ({"timeout_s": -1}, r"timeout_s must be a positive number"),
])
def test_bad_run_policy_is_a_validation_error(params, match):
    with pytest.raises(PipelineValidationError, match=match):
        vote_pipeline(**params).compile()


# ---- a node that generates jointly from several experts fits as it is -----------------------------
class JointFake(Node):
    """Stands in for latent fusion: ONE request per question names all its experts (fake)."""

    type_name = "joint-fake"
    outputs = {"final": Finals}

    def run(self, ctx, *, questions: Questions, decisions: Decisions) -> dict:
        from orchestrator.core import GenerationRequest

        reqs = {q.id: GenerationRequest(key=ctx.key(q.id, "joint"), model="smollm2-135m",
                                        messages=[{"role": "user", "content": "+".join(d.names)}])
                for q, d in zip(questions, decisions)}
        done = ctx.dispatcher.run_batches({"smollm2-135m": list(reqs.values())}, label=self.name)
        for q, d in zip(questions, decisions):
            ctx.record(q.id, fused=d.names, prompt_tokens=7)
        return {"final": [Aggregated(answer=done[reqs[q.id].key].text, aggregator="joint-fake") for q in questions]}


def test_a_joint_generation_node_needs_no_special_case():
    NODE_TYPES.add("joint-fake", JointFake)
    p = Pipeline("joint")
    for n, t, params in [("input", "input", None), ("router", "router", {"router": "fixed", "experts": ["coder", "physician"]}),
                         ("fuse", "joint-fake", None), ("output", "output", None)]:
        p.add_node(n, t, params)
    for a, b in [("input.questions", "router.questions"), ("input.questions", "fuse.questions"),
                 ("router.decisions", "fuse.decisions"), ("fuse.final", "output.final")]:
        p.connect(a, b)
    disp = FakeDispatcher(lambda r: "fused: " + r.messages[-1]["content"])
    (r,) = execute(p, EIGHT[:1], ctx_for(disp))
    assert r.answer == "fused: coder+physician" and r.aggregator == "joint-fake"
    step = r.trace.steps[2]
    assert step.part["fused"] == ["coder", "physician"] and step.prompt_tokens == 7 and step.completion_tokens == 3
    assert [e.name for e in r.experts] == ["coder", "physician"] and disp.batches == [("fuse", "smollm2-135m", 1)]


# ---- input no model can read -------------------------------------------------------------------------
@pytest.mark.parametrize("text,what", [("bad \ud800 text", r"lone UTF-16 surrogate \(U\+D800\) at character 5"),
                                       ("nul\x00here", r"a NUL character at character 4")])
def test_untokenizable_questions_are_one_line_input_errors(text, what):
    with pytest.raises(InputError, match=what) as info:
        check_question(text, where="line 3")
    assert "\n" not in str(info.value) and str(info.value).startswith("line 3:")


# ---- names resolve to built-ins; files only by path ---------------------------------------------------
def test_a_file_or_folder_named_like_a_builtin_never_replaces_it(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "coe").write_text("name: hijacked\nnodes: []\nedges: []\n")
    (tmp_path / "ensemble-vote").mkdir()
    assert Pipeline.load("coe") == Pipeline.load("coe") and Pipeline.load("coe").name == "coe"
    assert Pipeline.load("ensemble-vote").name == "ensemble-vote"
    assert Pipeline.load("./coe").name == "hijacked"  # an explicit path is read
    with pytest.raises(UnknownNameError, match=r"unknown pipeline 'my'.*pass a path such as ./my.yaml"):
        Pipeline.load("my")


@pytest.mark.parametrize("make,match", [
    (lambda d: (d / "folder").mkdir() or str(d / "folder"), r"folder: is a directory, not a pipeline YAML file"),
    (lambda d: (d / "b.yaml").write_bytes(b"name: x\n\xff\xfe\x00junk") and str(d / "b.yaml"), r"b.yaml: not UTF-8 text"),
    (lambda d: (d / "z.yaml").write_bytes(b"\x00\x01\x02") and str(d / "z.yaml"), r"z.yaml:.*malformed YAML"),
    (lambda d: (d / "p.yaml").write_text("name: x\nnodes:\n  - {name: a, type: input, params: 'k: 3'}\nedges: []\n")
     and str(d / "p.yaml"), r"node 'a': params must be a mapping, got 'k: 3'"),
])
def test_bad_pipeline_files_are_one_line_cli_errors(tmp_path, capsys, make, match):
    path = make(tmp_path)
    assert cli.main(["pipelines", "validate", path]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("expertmix: error:") and "\n" not in err and "Traceback" not in err
    assert pytest.importorskip("re").search(match, err), err


def test_bare_name_that_is_a_directory_in_cwd_runs_the_builtin(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "ensemble-vote").mkdir()
    assert cli.main(["pipelines", "validate", "ensemble-vote"]) == 0
    assert "input -> router -> experts -> vote -> output" in capsys.readouterr().out


# ---- pictures of the graph ---------------------------------------------------------------------------
def test_pipelines_show_mermaid_draws_every_node_and_edge(capsys):
    assert cli.main(["pipelines", "show", "cascade", "--format", "mermaid"]) == 0
    out = capsys.readouterr().out
    pipe = Pipeline.load("cascade")
    assert out.startswith("flowchart LR\n")
    assert out.count(" --> ") == pipe.graph.number_of_edges()
    assert 'escalate -- "questions" --> router' in out and 'synthesis -- "final" --> output' in out
    assert all(f"  {n}[" in out or f"  {n}(" in out for n in pipe.graph)


def test_pipelines_show_png_writes_an_image(tmp_path, capsys):
    out = tmp_path / "g.png"
    assert cli.main(["pipelines", "show", "decomp", "--format", "png", "--out", str(out)]) == 0
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 10_000
    assert cli.main(["pipelines", "show", "decomp", "--format", "png"]) == 2
    assert "add --out graph.png" in capsys.readouterr().err
