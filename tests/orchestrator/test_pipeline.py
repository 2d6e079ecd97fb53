"""Pipeline graphs: shapes (outputs and execution order), YAML round trip, validation errors."""

from __future__ import annotations

import pytest
import yaml

from orchestrator.config import ExpertRegistry
from orchestrator.context import RunContext
from orchestrator.errors import ConfigError, PipelineValidationError, UnknownNameError
from orchestrator.executor import execute
from orchestrator.nodes import NODE_TYPES
from orchestrator.pipeline import Pipeline, builtin_pipelines
from orchestrator.core import Question
from tests.fakes import FakeDispatcher

pytestmark = pytest.mark.unit

STD_EDGES = [
    ("input.questions", "router.questions"), ("input.questions", "experts.questions"),
    ("router.decisions", "experts.decisions"), ("input.questions", "agg.questions"),
    ("experts.answers", "agg.answers"), ("agg.final", "output.final"),
]


def make(nodes, edges, name="t"):
    return Pipeline.from_dict({
        "name": name,
        "nodes": [{"name": n, "type": t, **({"params": p} if p else {})} for n, t, p in nodes],
        "edges": [{"from": a, "to": b} for a, b in edges],
    })


FIXED = {"router": "fixed", "experts": ["generalist", "coder"]}
SHAPES = [
    # (id, nodes, edges, expected order, expected answer of q0, expected batch labels)
    ("vote", [("input", "input", None), ("router", "router", FIXED), ("experts", "experts", None),
              ("agg", "aggregator", {"aggregator": "vote"}), ("output", "output", None)],
     STD_EDGES, ["input", "router", "experts", "agg", "output"], "84", ["experts", "experts"]),
    ("declared-out-of-order", [("output", "output", None), ("agg", "aggregator", {"aggregator": "vote"}),
                               ("experts", "experts", None), ("router", "router", FIXED), ("input", "input", None)],
     STD_EDGES, ["input", "router", "experts", "agg", "output"], "84", ["experts", "experts"]),
    ("synthesis", [("input", "input", None), ("router", "router", FIXED), ("experts", "experts", None),
                   ("agg", "aggregator", {"aggregator": "synthesis", "pass_single": False, "model": "qwen-coder-0.5b"}), ("output", "output", None)],
     STD_EDGES, ["input", "router", "experts", "agg", "output"], "Answer: 84 (qwen-coder-0.5b)",
     ["experts", "experts", "aggregate"]),
    ("single-expert-passthrough", [("input", "input", None), ("router", "router", {"router": "fixed", "experts": ["coder"]}),
                                   ("experts", "experts", {"max_tokens": 7}), ("agg", "aggregator", {"aggregator": "synthesis"}),
                                   ("output", "output", None)],
     STD_EDGES, ["input", "router", "experts", "agg", "output"], "Answer: 84 (qwen-coder-0.5b)", ["experts"]),
]


@pytest.mark.parametrize("sid,nodes,edges,order,answer,labels", SHAPES, ids=[s[0] for s in SHAPES])
def test_shapes_outputs_and_order(sid, nodes, edges, order, answer, labels):
    pipe = make(nodes, edges).validate()
    assert pipe.execution_order() == order
    disp = FakeDispatcher()
    ctx = RunContext(registry=ExpertRegistry.default(), dispatcher=disp, run_id="r1")
    results = execute(pipe, [Question(id="q0", text="What is 12 * 7?"), Question(id="q1", text="Sort a list in python")], ctx)
    assert [r.id for r in results] == ["q0", "q1"]
    assert results[0].answer == answer
    assert [b[0] for b in disp.batches] == labels
    assert [t.node for t in results[0].trace.timings] == order


def test_max_tokens_param_overrides_expert_sampling():
    seen = []
    disp = FakeDispatcher(reply=lambda r: seen.append(r.sampling.max_tokens) or "x")
    pipe = make(SHAPES[3][1], STD_EDGES)
    execute(pipe, [Question(id="a", text="hi there")], RunContext(registry=ExpertRegistry.default(), dispatcher=disp))
    assert seen == [7]


@pytest.mark.parametrize("name", builtin_pipelines())
def test_builtin_round_trip(name):
    pipe = Pipeline.load(name)
    assert Pipeline.from_dict(pipe.to_dict()) == pipe
    assert Pipeline.from_dict(yaml.safe_load(pipe.to_yaml())) == pipe
    assert pipe.execution_order()[0] == "input" and pipe.execution_order()[-1] == "output"


def test_builtins_include_symbolic_moe_and_coe():
    assert {"symbolic-moe", "coe"} <= set(builtin_pipelines())


def test_yaml_file_round_trip(tmp_path):
    pipe = Pipeline.load("ensemble-vote")
    path = tmp_path / "p.yaml"
    path.write_text(pipe.to_yaml())
    assert Pipeline.load(str(path)) == pipe


def _std(**override):
    nodes = {"input": ("input", None), "router": ("router", FIXED), "experts": ("experts", None),
             "agg": ("aggregator", {"aggregator": "vote"}), "output": ("output", None)}
    nodes.update(override)
    return [(n, t, p) for n, (t, p) in nodes.items() if t is not None]


BAD = [
    ("unknown node type", _std(agg=("blender", None)), STD_EDGES, r"unknown node type 'blender'.*node 'agg'.*use one of: aggregator"),
    ("unknown router", _std(router=("router", {"router": "nope"})), STD_EDGES, r"unknown router 'nope'.*keyword"),
    ("bad node params", _std(experts=("experts", {"colour": 1})), STD_EDGES, r"node 'experts': bad params"),
    ("bad output port", _std(), [*STD_EDGES[:-1], ("agg.result", "output.final")], r"node 'agg' has no output 'result'.*outputs of 'agg': \['final'\]"),
    ("mistyped edge", _std(), [*STD_EDGES[:-1], ("experts.answers", "output.final")], r"connects 'answers' to 'final'"),
    ("missing input", _std(), STD_EDGES[1:], r"node 'router' input 'questions' is not connected"),
    ("two feeds", _std(), [*STD_EDGES, ("input.questions", "router.questions")], r"input 'questions' has 2 edges"),
    ("no output node", _std(output=(None, None)), STD_EDGES[:-1], r"exactly one 'output' node"),
]


@pytest.mark.parametrize("label,nodes,edges,match", BAD, ids=[b[0] for b in BAD])
def test_validation_errors_name_node_and_fix(label, nodes, edges, match):
    with pytest.raises(PipelineValidationError, match=match) as info:
        make(nodes, edges).validate()
    assert "fix:" in str(info.value)


# A cycle that really reaches the cycle check (well typed, every input fed) is in test_compile.py.


def test_edge_to_unknown_node_and_bad_edge_format():
    with pytest.raises(PipelineValidationError, match=r"unknown node 'ghost'.*fix: define it"):
        make(_std(), [*STD_EDGES, ("ghost.x", "agg.answers")])
    with pytest.raises(PipelineValidationError, match=r"bad edge end 'router'.*'node.port'"):
        make(_std(), [("router", "experts.decisions")])


def test_duplicate_node_name():
    with pytest.raises(PipelineValidationError, match="defined twice"):
        make([("input", "input", None), ("input", "input", None)], [])


def test_from_dict_structure_errors():
    with pytest.raises(ConfigError, match="missing nodes, edges"):
        Pipeline.from_dict({"name": "x"})
    with pytest.raises(ConfigError, match=r"nodes\[0\] needs `name` and `type`"):
        Pipeline.from_dict({"name": "x", "nodes": [{"type": "input"}], "edges": []})
    with pytest.raises(ConfigError, match="unknown keys"):
        Pipeline.from_dict({"name": "x", "nodes": [{"name": "a", "type": "input", "code": "import os"}], "edges": []})


def test_malformed_yaml_names_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nnodes:\n  - name: a\n   type: input\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: line \d+, column \d+: malformed YAML"):
        Pipeline.load(str(bad))


def test_unknown_builtin_pipeline_lists_choices():
    with pytest.raises(UnknownNameError, match=r"unknown pipeline 'nope'.*coe.*symbolic-moe"):
        Pipeline.load("nope")


def test_node_types_are_an_allowlist():
    assert set(NODE_TYPES.names()) >= {"input", "output", "router", "experts", "aggregator"}
    with pytest.raises(PipelineValidationError, match="unknown node type 'os.system'"):
        make([("a", "os.system", None)], []).validate()
