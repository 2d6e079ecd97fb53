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

import os
from importlib import resources
from pathlib import Path
from typing import Any

import networkx as nx
import yaml

from orchestrator.config import load_yaml
from orchestrator.errors import ConfigError, PipelineValidationError, UnknownNameError
from orchestrator.compiled import CompiledPipeline, compile_pipeline


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
        self._compiled: CompiledPipeline | None = None

    # ---- building ------------------------------------------------------------------------
    def add_node(self, name: str, type: str, params: dict[str, Any] | None = None) -> None:
        if not isinstance(name, str) or not name or "." in name:
            raise PipelineValidationError(f"pipeline {self.name!r}: bad node name {name!r}",
                                          hint="use a non-empty name without dots")
        if name in self.graph:
            raise PipelineValidationError(f"pipeline {self.name!r}: node {name!r} is defined twice",
                                          hint="give every node a unique name")
        if params is not None and not isinstance(params, dict):
            raise PipelineValidationError(f"pipeline {self.name!r}: node {name!r}: params must be a mapping, got {params!r:.80}",
                                          hint="write params as {key: value, ...}, e.g. params: {router: keyword, k: 3}")
        self.graph.add_node(name, type=type, params=dict(params or {}))
        self._compiled = None

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
        self._compiled = None

    # ---- compiling -------------------------------------------------------------------------
    def compile(self) -> "CompiledPipeline":
        """Validate once and build every node once: the object the SDK and gateway run.

        Cached until the graph changes, so ``validate()`` followed by ``compile()`` builds nothing twice.
        """
        if self._compiled is None:
            self._compiled = compile_pipeline(self)
        return self._compiled

    def validate(self) -> "Pipeline":
        """Check node types, params, edges, cycles, inputs (see :mod:`orchestrator.compiled`). Returns ``self``."""
        self.compile()
        return self

    def execution_order(self) -> list[str]:
        """Topological order, ties broken by insertion order (deterministic)."""
        position = {n: i for i, n in enumerate(self.graph)}
        return list(nx.lexicographical_topological_sort(self.graph, key=lambda n: position[n]))

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
        p = Path(path).expanduser()
        if p.is_dir():
            raise ConfigError(f"{p}: is a directory, not a pipeline YAML file",
                              hint="pass a .yaml file, or a built-in name (`expertmix pipelines list`)")
        return cls.from_dict(load_yaml(p), source=str(path))

    @classmethod
    def load(cls, name_or_path: str) -> "Pipeline":
        """A built-in pipeline by name (``symbolic-moe``, ``coe``, ...) or a YAML file by path.

        A file is read only when the argument looks like a path (a path separator, a leading
        ``.`` or ``~``, or a ``.yaml``/``.yml`` suffix): a bare name is always a built-in, so a
        file or folder called ``coe`` in the working directory never replaces built-in ``coe``.
        """
        if not isinstance(name_or_path, str) or not name_or_path:
            raise ConfigError(f"pipeline must be a built-in name or a YAML path, got {name_or_path!r}",
                              hint=f"use one of: {', '.join(builtin_pipelines())}")
        if looks_like_path(name_or_path):
            return cls.from_yaml(name_or_path)
        if name_or_path not in builtin_pipelines():
            raise UnknownNameError("pipeline", name_or_path, builtin_pipelines(),
                                   where="built-in pipelines (to load a file, pass a path such as ./my.yaml)")
        ref = resources.files("orchestrator.builtin") / "pipelines" / f"{name_or_path}.yaml"
        return cls.from_dict(yaml.safe_load(ref.read_text(encoding="utf-8")), source=f"builtin:{name_or_path}.yaml")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pipeline) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, nodes={list(self.graph)})"


def looks_like_path(name: str) -> bool:
    """Whether a ``--pipeline`` / ``Pipeline.load`` argument names a file rather than a built-in."""
    return ("/" in name or os.sep in name or name.startswith((".", "~"))
            or Path(name).suffix in (".yaml", ".yml"))


def _split(ref: str, pipeline: str) -> tuple[str, str]:
    if not isinstance(ref, str) or ref.count(".") != 1 or not all(ref.split(".")):
        raise PipelineValidationError(f"pipeline {pipeline!r}: bad edge end {ref!r}",
                                      hint="write edge ends as 'node.port', e.g. 'router.decisions'")
    node, port = ref.split(".")
    return node, port
