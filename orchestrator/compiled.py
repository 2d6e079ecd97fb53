"""Compiling a pipeline: validate the graph once, build every node once, fix the order and wiring.

:meth:`Pipeline.compile() <orchestrator.pipeline.Pipeline.compile>` returns a
:class:`CompiledPipeline`; the SDK and the gateway keep it and run it many times, so routers keep
what they loaded. Checks, in order, each with a message that names the node and the fix:

1. every node type is registered (the YAML allowlist) and its ``params`` is a mapping;
2. every edge joins an existing output to an existing input of the same port type;
3. no cycle;
4. every required input is fed, by exactly one edge unless the input merges branches;
5. sub-question levels agree (a node never mixes questions with another node's sub-questions);
6. exactly one ``input`` and one ``output`` node;
7. each node builds from its params (unknown router, bad setting, ...).

Per-node run policy (``retry``, ``timeout_s``) is read from the node's params here, so every node
type gets it without declaring it.

Example::

    >>> from orchestrator.pipeline import Pipeline
    >>> compiled = Pipeline.load("moa").compile()
    >>> compiled.order
    ['input', 'router', 'round1', 'round2', 'aggregate', 'output']
    >>> compiled.wiring["round2"]["references"]
    [('round1', 'answers')]

Run it with :func:`orchestrator.executor.execute` (the SDK does).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import networkx as nx
from pydantic import BaseModel, Field, ValidationError

from orchestrator.core import NODE_TYPES, Node, PortType, node_ports
from orchestrator.errors import (
    BackendError,
    ConfigError,
    PipelineValidationError,
    UnknownNameError,
)

if TYPE_CHECKING:
    from orchestrator.pipeline import Pipeline

POLICY_PARAMS = ("retry", "timeout_s")


class RetryPolicy(BaseModel):
    """How often a node is retried after an error (LangGraph's ``RetryPolicy`` fields).

    ``retry_on: transient`` retries errors marked transient (a backend hiccup, a timeout);
    ``any`` retries every error except configuration and budget errors.

    Example (YAML node params)::

        params: {router: keyword, retry: {max_attempts: 3, initial_interval: 0.5}, timeout_s: 60}
    """

    model_config = {"extra": "forbid", "frozen": True}
    max_attempts: int = Field(default=3, ge=1)
    initial_interval: float = Field(default=0.5, ge=0)
    backoff_factor: float = Field(default=2.0, ge=1)
    max_interval: float = Field(default=128.0, ge=0)
    jitter: bool = True
    retry_on: Literal["transient", "any"] = "transient"

    def retries(self, exc: BaseException) -> bool:
        if self.retry_on == "any":
            return True
        return isinstance(exc, TimeoutError) or (isinstance(exc, BackendError) and exc.transient)

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt ``attempt + 1``."""
        wait = min(self.max_interval, self.initial_interval * self.backoff_factor ** (attempt - 1))
        return wait * (0.5 + random.random()) if self.jitter else wait  # noqa: S311 (not crypto)


NO_RETRY = RetryPolicy(max_attempts=1)


@dataclass(frozen=True)
class NodePolicy:
    """A node's run policy: retries, and a wall-clock limit per attempt (``None``: none)."""

    retry: RetryPolicy = NO_RETRY
    timeout_s: float | None = None


@dataclass
class CompiledPipeline:
    """A validated pipeline with its nodes built: what the executor runs.

    ``wiring[node][input_port]`` lists the ``(source node, source port)`` feeding that input
    (several only for merging inputs); ``depth[node]`` is 1 for nodes that see the run's
    questions and one more for each decomposition they sit behind.
    """

    name: str
    nodes: dict[str, Node]
    order: list[str]
    wiring: dict[str, dict[str, list[tuple[str, str]]]]
    policies: dict[str, NodePolicy]
    depth: dict[str, int]
    input_node: str
    output_node: str
    types: dict[str, str] = field(default_factory=dict)

    def output_port(self, node: str, port: str) -> PortType:
        return node_ports(type(self.nodes[node]))[1][port]


def compile_pipeline(pipe: "Pipeline") -> CompiledPipeline:
    """Validate ``pipe`` (see the module docstring for the checks) and build its nodes once."""
    classes = {n: _node_class(pipe, n) for n in pipe.graph}
    ports = {n: node_ports(cls) for n, cls in classes.items()}
    wiring = _check_edges(pipe, ports)
    if not nx.is_directed_acyclic_graph(pipe.graph):
        cycle = " -> ".join([a for a, _b, *_ in nx.find_cycle(pipe.graph)] + [nx.find_cycle(pipe.graph)[0][0]])
        raise PipelineValidationError(f"pipeline {pipe.name!r} has a cycle: {cycle}",
                                      hint="remove one edge of the cycle; pipelines are DAGs")
    _check_inputs(pipe, ports, wiring)
    kinds = {n: pipe.graph.nodes[n]["type"] for n in pipe.graph}
    ends = {}
    for must in ("input", "output"):
        named = [n for n, k in kinds.items() if k == must]
        if len(named) != 1:
            raise PipelineValidationError(f"pipeline {pipe.name!r} needs exactly one {must!r} node, has {len(named)}",
                                          hint=f"add one node of type {must}")
        ends[must] = named[0]
    order = pipe.execution_order()
    depth = _check_depths(pipe, order, ports, wiring)
    policies = {n: _policy(pipe, n) for n in order}
    nodes = {n: _build(pipe, n, classes[n]) for n in order}
    return CompiledPipeline(name=pipe.name, nodes=nodes, order=order, wiring=wiring, policies=policies,
                            depth=depth, input_node=ends["input"], output_node=ends["output"], types=kinds)


def _node_class(pipe: "Pipeline", name: str) -> type[Node]:
    data = pipe.graph.nodes[name]
    try:
        return NODE_TYPES.get(data["type"], where=f"pipeline {pipe.name!r}, node {name!r}")
    except UnknownNameError as exc:
        raise PipelineValidationError(exc.message, hint=exc.hint) from None


def _check_edges(pipe: "Pipeline", ports: dict[str, tuple[dict[str, PortType], dict[str, PortType], set[str]]]
                 ) -> dict[str, dict[str, list[tuple[str, str]]]]:
    wiring: dict[str, dict[str, list[tuple[str, str]]]] = {n: {} for n in pipe.graph}
    for a, b, d in pipe.graph.edges(data=True):
        sp, dp = d["src_port"], d["dst_port"]
        out_t, in_t = ports[a][1].get(sp), ports[b][0].get(dp)
        edge = f"{a}.{sp} -> {b}.{dp}"
        if out_t is None:
            raise PipelineValidationError(f"pipeline {pipe.name!r}: edge {edge}: node {a!r} has no output {sp!r}",
                                          hint=f"outputs of {a!r}: {sorted(ports[a][1])}")
        if in_t is None:
            raise PipelineValidationError(f"pipeline {pipe.name!r}: edge {edge}: node {b!r} has no input {dp!r}",
                                          hint=f"inputs of {b!r}: {sorted(ports[b][0])}")
        if out_t.name != in_t.name:
            raise PipelineValidationError(f"pipeline {pipe.name!r}: edge {edge} connects {out_t.name!r} to {in_t.name!r}",
                                          hint=f"connect {b}.{dp} to an output of type {in_t.name!r}")
        wiring[b].setdefault(dp, []).append((a, sp))
    return wiring


def _check_inputs(pipe, ports, wiring) -> None:
    for name, (inputs, _outputs, optional) in ports.items():
        for port, spec in inputs.items():
            feeds = wiring[name].get(port, [])
            if not feeds and port not in optional:
                raise PipelineValidationError(f"pipeline {pipe.name!r}: node {name!r} input {port!r} is not connected",
                                              hint=f"add an edge '<node>.<port>' -> '{name}.{port}'")
            if len(feeds) > 1 and not spec.merge:
                raise PipelineValidationError(f"pipeline {pipe.name!r}: node {name!r} input {port!r} has {len(feeds)} edges",
                                              hint="feed each input from exactly one output (only merging inputs "
                                                   "such as output.final join branches)")


def _check_depths(pipe, order, ports, wiring) -> dict[str, int]:
    """Sub-question level of every node: its plain inputs agree, grouped inputs are one deeper."""
    depth: dict[str, int] = {}
    for name in order:
        inputs, _outputs, _optional = ports[name]
        seen: dict[int, str] = {}
        for port, feeds in wiring[name].items():
            for src, sport in feeds:
                level = depth[src] + (1 if ports[src][1][sport].children else 0) - (1 if inputs[port].children else 0)
                seen.setdefault(level, f"{src}.{sport} -> {name}.{port}")
        if len(seen) > 1:
            edges = "; ".join(f"{e} (level {lv})" for lv, e in sorted(seen.items()))
            raise PipelineValidationError(f"pipeline {pipe.name!r}: node {name!r} mixes questions and sub-questions: {edges}",
                                          hint="feed a node either the run's questions or a decomposer's sub-questions; "
                                               "join sub-question answers back with a grouped input (compose.answers)")
        depth[name] = next(iter(seen), 1)
    return depth


def _policy(pipe: "Pipeline", name: str) -> NodePolicy:
    params = pipe.graph.nodes[name]["params"]
    where = f"pipeline {pipe.name!r}, node {name!r}"
    retry, timeout = params.get("retry"), params.get("timeout_s")
    try:
        policy = RetryPolicy(**retry) if isinstance(retry, dict) else (NO_RETRY if retry is None else None)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise PipelineValidationError(f"{where}: retry.{'.'.join(map(str, err['loc']))}: {err['msg']}",
                                      hint=f"retry takes {sorted(RetryPolicy.model_fields)}") from None
    if policy is None:
        raise PipelineValidationError(f"{where}: retry must be a mapping, got {retry!r}",
                                      hint="e.g. retry: {max_attempts: 3, initial_interval: 0.5}")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        raise PipelineValidationError(f"{where}: timeout_s must be a positive number of seconds, got {timeout!r}",
                                      hint="remove it (no limit) or set e.g. timeout_s: 60")
    return NodePolicy(retry=policy, timeout_s=float(timeout) if timeout is not None else None)


def _build(pipe: "Pipeline", name: str, cls: type[Node]) -> Node:
    data = pipe.graph.nodes[name]
    params = {k: v for k, v in data["params"].items() if k not in POLICY_PARAMS}
    where = f"pipeline {pipe.name!r}, node {name!r}"
    try:
        return cls(name=name, **params)
    except PipelineValidationError:
        raise
    except ConfigError as exc:  # e.g. an unknown router name inside the node's params
        raise PipelineValidationError(f"{where}: {exc.message}", hint=exc.hint) from None
    except TypeError as exc:
        raise PipelineValidationError(f"{where}: bad params: {exc}",
                                      hint=f"see the params of node type {data['type']!r} in docs/pipelines.md") from None


def describe_ports(cls: type[Node]) -> dict[str, Any]:
    """``{"inputs": {...}, "outputs": {...}}`` with port type names, ``?`` marking optional inputs."""
    inputs, outputs, optional = node_ports(cls)
    return {"inputs": {p: t.label + ("?" if p in optional else "") for p, t in inputs.items()},
            "outputs": {p: t.label for p, t in outputs.items()}}
