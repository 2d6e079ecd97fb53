"""Pictures of a pipeline graph: Mermaid text (renders on GitHub and in most Markdown viewers) and
a PNG drawn with matplotlib + networkx (no network, no browser).

Example::

    >>> from orchestrator.pipeline import Pipeline
    >>> print(to_mermaid(Pipeline.load("ensemble-vote")).splitlines()[0])
    flowchart LR
"""

from __future__ import annotations

import io
import re
from typing import TYPE_CHECKING, Any

import networkx as nx

if TYPE_CHECKING:
    from orchestrator.pipeline import Pipeline

_SUMMARY_KEYS = ("router", "aggregator", "k", "experts", "samples", "threshold", "max_parts")


def node_label(pipe: "Pipeline", name: str, sep: str = "\n") -> str:
    """``name``, its type and the params a reader needs to tell nodes apart (router, k, ...)."""
    data = pipe.graph.nodes[name]
    params = data["params"]
    shown = [f"{k}: {_short(params[k])}" for k in _SUMMARY_KEYS if k in params]
    head = name if data["type"] == name else f"{name} ({data['type']})"
    return sep.join([head, *shown])


def edge_label(src_port: str, dst_port: str) -> str:
    return src_port if src_port == dst_port else f"{src_port} → {dst_port}"


def to_mermaid(pipe: "Pipeline") -> str:
    """A Mermaid ``flowchart LR`` of the pipeline: one box per node, one labelled arrow per edge."""
    ids = {n: _mermaid_id(n, i) for i, n in enumerate(pipe.graph)}
    lines = ["flowchart LR"]
    for name, data in pipe.graph.nodes(data=True):
        label = node_label(pipe, name, "<br/>").replace('"', "'")
        shape = ('(["', '"])') if data["type"] in ("input", "output") else ('["', '"]')
        lines.append(f"  {ids[name]}{shape[0]}{label}{shape[1]}")
    for a, b, d in pipe.graph.edges(data=True):
        lines.append(f"  {ids[a]} -- \"{edge_label(d['src_port'], d['dst_port'])}\" --> {ids[b]}")
    return "\n".join(lines) + "\n"


def to_png(pipe: "Pipeline") -> bytes:
    """A PNG of the pipeline, left to right in execution layers (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pos = layered_positions(pipe)
    span = max(x for x, _ in pos.values()) + 1
    fig, ax = plt.subplots(figsize=(max(6.0, 2.3 * span), 4.2), dpi=110)
    labels: dict[tuple[str, str], list[str]] = {}
    for a, b, d in pipe.graph.edges(data=True):
        labels.setdefault((a, b), []).append(edge_label(d["src_port"], d["dst_port"]))
    for i, ((a, b), names) in enumerate(labels.items()):
        (x1, y1), (x2, y2) = pos[a], pos[b]
        hops = abs(x2 - x1)
        rad = 0.0 if hops <= 1 and y1 == y2 else (0.12 + 0.05 * hops) * (1 if i % 2 else -1)  # long edges arc
        ax.annotate("", xy=(x2, y2), xytext=(x1, y1), zorder=1,
                    arrowprops={"arrowstyle": "-|>", "color": "#555555", "shrinkA": 28, "shrinkB": 28,
                                "connectionstyle": f"arc3,rad={rad}"})
        mx, my = (x1 + x2) / 2 + 0.5 * rad * (y2 - y1), (y1 + y2) / 2 - 0.5 * rad * (x2 - x1)
        ax.text(mx, my, ", ".join(names), fontsize=6.5, ha="center", va="center", zorder=2, color="#333333",
                bbox={"boxstyle": "round,pad=0.1", "fc": "white", "ec": "none", "alpha": 0.8})
    for name, (x, y) in pos.items():
        kind = pipe.graph.nodes[name]["type"]
        colour = {"input": "#d9ead3", "output": "#d9ead3", "router": "#cfe2f3", "experts": "#fff2cc",
                  "aggregator": "#f4cccc", "escalate": "#ead1dc", "decompose": "#d9d2e9", "compose": "#d9d2e9"}
        ax.text(x, y, node_label(pipe, name), ha="center", va="center", fontsize=8, zorder=3,
                bbox={"boxstyle": "round,pad=0.4", "fc": colour.get(kind, "#eeeeee"), "ec": "#333333"})
    ax.set_title(f"{pipe.name}: {pipe.description}" if pipe.description else pipe.name, fontsize=9)
    ax.set_xlim(-0.6, span - 0.4)
    ax.set_ylim(-2.0, 2.0)
    ax.axis("off")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def layered_positions(pipe: "Pipeline") -> dict[str, tuple[float, float]]:
    """x = the node's longest distance from a source (its execution layer), y spread per layer."""
    layer: dict[str, int] = {}
    for name in pipe.execution_order():
        layer[name] = max((layer[p] + 1 for p in pipe.graph.predecessors(name)), default=0)
    by_layer: dict[int, list[str]] = {}
    for name in pipe.execution_order():
        by_layer.setdefault(layer[name], []).append(name)
    pos = {}
    for x, names in by_layer.items():
        for i, name in enumerate(names):
            pos[name] = (float(x), (len(names) - 1) / 2 - i)
    return pos


def _mermaid_id(name: str, index: int) -> str:
    clean = re.sub(r"\W", "_", name)
    return clean if clean and clean[0].isalpha() and clean not in {"end", "graph", "subgraph"} else f"n{index}_{clean}"


def _short(value: Any) -> str:
    text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
    return text if len(text) <= 28 else text[:25] + "..."
