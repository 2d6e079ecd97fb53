"""A pipeline is data: a networkx DAG of named nodes and typed ``"node.port" -> "node.port"`` edges.

Build, then validate, then run. ``Pipeline.from_dict`` / ``from_yaml`` / ``load`` never import
code named in YAML: node types resolve through :data:`orchestrator.nodes.NODE_TYPES` (an allowlist).
Validation rejects unknown node types, bad params, dangling or mistyped edges, cycles and missing
inputs before any model is called, with a message naming the node and the fix.

Example::

    >>> p = Pipeline("tiny")
    >>> p.add_node("input", "input"); p.add_node("router", "router", {"router": "keyword", "k": 2})
    >>> p.add_node("experts", "experts"); p.add_node("vote", "aggregator", {"aggregator": "vote"})
    >>> p.add_node("output", "output")
    >>> for src, dst in [("input.questions", "router.questions"), ("input.questions", "experts.questions"),
    ...                  ("router.decisions", "experts.decisions"), ("input.questions", "vote.questions"),
    ...                  ("experts.answers", "vote.answers"), ("vote.final", "output.final")]:
    ...     p.connect(src, dst)
    >>> p.validate().execution_order()
    ['input', 'router', 'experts', 'vote', 'output']
    >>> Pipeline.from_dict(p.to_dict()) == p
    True
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

import networkx as nx
import yaml

from orchestrator.config import load_yaml
from orchestrator.errors import ConfigError, PipelineValidationError, UnknownNameError
from orchestrator.core import NODE_TYPES, Node


def builtin_pipelines() -> list[str]:
    """Names of the pipelines that ship with expertmix."""
    folder = resources.files("orchestrator.builtin") / "pipelines"
    return sorted(p.name[: -len(".yaml")] for p in folder.iterdir() if p.name.endswith(".yaml"))


class Pipeline:
    """A named DAG of nodes with typed ports."""

    def __init__(self, name: str, description: str = "") -> None:
        self.name = name
        self.description = description
        self.graph = nx.MultiDiGraph()
        self._validated = False

    # ---- building ------------------------------------------------------------------------
    def add_node(self, name: str, type: str, params: dict[str, Any] | None = None) -> None:
        if not isinstance(name, str) or not name or "." in name:
            raise PipelineValidationError(f"pipeline {self.name!r}: bad node name {name!r}",
                                          hint="use a non-empty name without dots")
        if name in self.graph:
            raise PipelineValidationError(f"pipeline {self.name!r}: node {name!r} is defined twice",
                                          hint="give every node a unique name")
        self.graph.add_node(name, type=type, params=dict(params or {}))
        self._validated = False

    def connect(self, src: str, dst: str) -> None:
        """Add an edge ``"node.port" -> "node.port"``; checked fully by :meth:`validate`."""
        (a, ap), (b, bp) = _split(src, self.name), _split(dst, self.name)
        for node in (a, b):
            if node not in self.graph:
                raise PipelineValidationError(
                    f"pipeline {self.name!r}: edge {src} -> {dst} names unknown node {node!r}",
                    hint=f"define it under nodes: or use one of {sorted(self.graph)}",
                )
        self.graph.add_edge(a, b, src_port=ap, dst_port=bp)
        self._validated = False

    # ---- validation ----------------------------------------------------------------------
    def validate(self) -> "Pipeline":
        """Check types, params, edges, acyclicity and inputs. Returns ``self``."""
        instances = {n: self._instantiate(n) for n in self.graph}
        self._check_edges(instances)
        if not nx.is_directed_acyclic_graph(self.graph):
            cycle = " -> ".join(a for a, _b, *_ in nx.find_cycle(self.graph))
            raise PipelineValidationError(f"pipeline {self.name!r} has a cycle: {cycle}",
                                          hint="remove one edge of the cycle; pipelines are DAGs")
        self._check_inputs(instances)
        kinds = [d["type"] for _, d in self.graph.nodes(data=True)]
        for must in ("input", "output"):
            if kinds.count(must) != 1:
                raise PipelineValidationError(f"pipeline {self.name!r} needs exactly one {must!r} node, has {kinds.count(must)}",
                                              hint=f"add one node of type {must}")
        self._validated = True
        return self

    def _instantiate(self, name: str) -> Node:
        data = self.graph.nodes[name]
        try:
            cls = NODE_TYPES.get(data["type"], where=f"pipeline {self.name!r}, node {name!r}")
        except UnknownNameError as exc:
            raise PipelineValidationError(exc.message, hint=exc.hint) from None
        try:
            return cls(name=name, **data["params"])
        except PipelineValidationError:
            raise
        except ConfigError as exc:  # e.g. an unknown router name inside the node's params
            raise PipelineValidationError(f"pipeline {self.name!r}, node {name!r}: {exc.message}", hint=exc.hint) from None
        except TypeError as exc:
            raise PipelineValidationError(f"pipeline {self.name!r}, node {name!r}: bad params: {exc}",
                                          hint=f"see the params of node type {data['type']!r}") from None

    def _check_edges(self, instances: dict[str, Node]) -> None:
        for a, b, d in self.graph.edges(data=True):
            out_t = instances[a].outputs.get(d["src_port"])
            in_t = instances[b].inputs.get(d["dst_port"])
            edge = f"{a}.{d['src_port']} -> {b}.{d['dst_port']}"
            if out_t is None:
                raise PipelineValidationError(f"pipeline {self.name!r}: edge {edge}: node {a!r} has no output {d['src_port']!r}",
                                              hint=f"outputs of {a!r}: {sorted(instances[a].outputs)}")
            if in_t is None:
                raise PipelineValidationError(f"pipeline {self.name!r}: edge {edge}: node {b!r} has no input {d['dst_port']!r}",
                                              hint=f"inputs of {b!r}: {sorted(instances[b].inputs)}")
            if out_t != in_t:
                raise PipelineValidationError(f"pipeline {self.name!r}: edge {edge} connects {out_t!r} to {in_t!r}",
                                              hint=f"connect {b}.{d['dst_port']} to an output of type {in_t!r}")

    def _check_inputs(self, instances: dict[str, Node]) -> None:
        for name, node in instances.items():
            fed = [d["dst_port"] for _, _, d in self.graph.in_edges(name, data=True)]
            for port in node.inputs:
                if fed.count(port) == 0:
                    raise PipelineValidationError(f"pipeline {self.name!r}: node {name!r} input {port!r} is not connected",
                                                  hint=f"add an edge '<node>.<port>' -> '{name}.{port}'")
                if fed.count(port) > 1:
                    raise PipelineValidationError(f"pipeline {self.name!r}: node {name!r} input {port!r} has {fed.count(port)} edges",
                                                  hint="feed each input from exactly one output")

    # ---- running helpers -----------------------------------------------------------------
    def execution_order(self) -> list[str]:
        """Topological order, ties broken by insertion order (deterministic)."""
        position = {n: i for i, n in enumerate(self.graph)}
        return list(nx.lexicographical_topological_sort(self.graph, key=lambda n: position[n]))

    def instantiate(self) -> dict[str, Node]:
        if not self._validated:
            self.validate()
        return {n: self._instantiate(n) for n in self.graph}

    def in_edges(self, name: str) -> list[tuple[str, str, str]]:
        """``(src_node, src_port, dst_port)`` feeding ``name``."""
        return [(a, d["src_port"], d["dst_port"]) for a, _, d in self.graph.in_edges(name, data=True)]

    def nodes_of_type(self, type_name: str) -> list[str]:
        return [n for n, d in self.graph.nodes(data=True) if d["type"] == type_name]

    # ---- serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        nodes = [{"name": n, "type": d["type"], **({"params": d["params"]} if d["params"] else {})}
                 for n, d in self.graph.nodes(data=True)]
        edges = [{"from": f"{a}.{d['src_port']}", "to": f"{b}.{d['dst_port']}"} for a, b, d in self.graph.edges(data=True)]
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        return {**out, "nodes": nodes, "edges": edges}

    @classmethod
    def from_dict(cls, data: Any, *, source: str = "<dict>") -> "Pipeline":
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: a pipeline must be a mapping with name, nodes and edges")
        missing = [k for k in ("name", "nodes", "edges") if k not in data]
        if missing:
            raise ConfigError(f"{source}: pipeline is missing {', '.join(missing)}", hint="see orchestrator/builtin/pipelines/*.yaml")
        pipe = cls(str(data["name"]), str(data.get("description", "")))
        for i, node in enumerate(data["nodes"] or []):
            if not isinstance(node, dict) or "name" not in node or "type" not in node:
                raise ConfigError(f"{source}: nodes[{i}] needs `name` and `type`", hint="e.g. {name: router, type: router}")
            unknown = set(node) - {"name", "type", "params"}
            if unknown:
                raise ConfigError(f"{source}: node {node['name']!r} has unknown keys {sorted(unknown)}", hint="allowed: name, type, params")
            pipe.add_node(node["name"], node["type"], node.get("params"))
        for i, edge in enumerate(data["edges"] or []):
            if not isinstance(edge, dict) or set(edge) != {"from", "to"}:
                raise ConfigError(f"{source}: edges[{i}] must be {{from: node.port, to: node.port}}, got {edge!r}")
            pipe.connect(edge["from"], edge["to"])
        return pipe

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_yaml(cls, path: str | Path) -> "Pipeline":
        return cls.from_dict(load_yaml(path), source=str(path))

    @classmethod
    def load(cls, name_or_path: str) -> "Pipeline":
        """A built-in pipeline by name (``symbolic-moe``, ``coe``, ...) or a YAML file path."""
        p = Path(name_or_path)
        if p.suffix in (".yaml", ".yml") or p.exists():
            return cls.from_yaml(p)
        if name_or_path not in builtin_pipelines():
            raise UnknownNameError("pipeline", name_or_path, builtin_pipelines(),
                                   where="built-in pipelines (or pass a path to a .yaml file)")
        ref = resources.files("orchestrator.builtin") / "pipelines" / f"{name_or_path}.yaml"
        return cls.from_dict(yaml.safe_load(ref.read_text()), source=f"builtin:{name_or_path}.yaml")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pipeline) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, nodes={list(self.graph)})"


def _split(ref: str, pipeline: str) -> tuple[str, str]:
    if not isinstance(ref, str) or ref.count(".") != 1 or not all(ref.split(".")):
        raise PipelineValidationError(f"pipeline {pipeline!r}: bad edge end {ref!r}",
                                      hint="write edge ends as 'node.port', e.g. 'router.decisions'")
    node, port = ref.split(".")
    return node, port
