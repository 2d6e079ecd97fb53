"""A self-contained HTML report of an evaluation: inline SVG plots, no scripts, no external files.

Plots: accuracy per task per system (95% CI whiskers; single experts and the oracle included),
cost vs accuracy with the Pareto front, which experts the routers picked per task, and the
agreement between single experts. Then the summary table.

Example::

    >>> html = render_report([{"system": "expert:a", "task": "t", "id": "1", "correct": True,
    ...                        "tokens": 5, "seconds": 0.1, "routed": ["a"], "experts": [], "extracted": "1"}])
    >>> html.startswith("<!doctype html>")
    True
"""

from __future__ import annotations

import html
from typing import Any

from skills.eval_summary import ALL, ORACLE, agreement, format_table, pareto_front, routed_counts, summarize

PALETTE = ["#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948", "#b07aa1", "#ff9da7", "#9c755f",
           "#bab0ac", "#1f77b4", "#17becf"]


def _esc(s: Any) -> str:
    return html.escape(str(s))


def accuracy_chart(summary: dict[str, Any]) -> str:
    """Grouped bars: x = task, one bar per system, CI whiskers."""
    systems, tasks = summary["systems"], summary["tasks"]
    bw, gap, h, top, left = 14, 24, 220, 20, 40
    group_w = bw * len(systems) + gap
    width = left + group_w * len(tasks) + 20
    parts = [f'<svg width="{width}" height="{h + 90}" xmlns="http://www.w3.org/2000/svg" font-size="11">']
    for frac in (0, 0.25, 0.5, 0.75, 1.0):
        y = top + h * (1 - frac)
        parts.append(f'<line x1="{left}" x2="{width - 10}" y1="{y}" y2="{y}" stroke="#ddd"/>'
                     f'<text x="{left - 5}" y="{y + 4}" text-anchor="end">{frac:.2f}</text>')
    for ti, task in enumerate(tasks):
        x0 = left + ti * group_w + gap / 2
        for si, system in enumerate(systems):
            cell = summary["cells"][system].get(task)
            if not cell:
                continue
            x = x0 + si * bw
            y = top + h * (1 - cell["accuracy"])
            lo, hi = (top + h * (1 - v) for v in cell["ci"])
            parts.append(f'<rect x="{x}" y="{y}" width="{bw - 2}" height="{top + h - y}" fill="{PALETTE[si % len(PALETTE)]}">'
                         f'<title>{_esc(system)} on {_esc(task)}: {cell["accuracy"]:.3f} (n={cell["n"]})</title></rect>'
                         f'<line x1="{x + bw / 2 - 1}" x2="{x + bw / 2 - 1}" y1="{lo}" y2="{hi}" stroke="#333"/>')
        parts.append(f'<text x="{x0 + bw * len(systems) / 2}" y="{top + h + 14}" text-anchor="middle">{_esc(task)}</text>')
    parts.append(_legend(systems, left, top + h + 30))
    parts.append("</svg>")
    return "".join(parts)


def _legend(names: list[str], x: int, y: int) -> str:
    out = []
    for i, name in enumerate(names):
        cx, cy = x + (i % 4) * 190, y + (i // 4) * 16
        out.append(f'<rect x="{cx}" y="{cy - 9}" width="10" height="10" fill="{PALETTE[i % len(PALETTE)]}"/>'
                   f'<text x="{cx + 14}" y="{cy}">{_esc(name)}</text>')
    return "".join(out)


def cost_chart(summary: dict[str, Any]) -> str:
    """Scatter of seconds per item vs accuracy over all items; the Pareto front joined by a line."""
    pts = [(s, summary["cells"][s][ALL]["seconds"], summary["cells"][s][ALL]["accuracy"]) for s in summary["systems"]]
    w, h, left, top = 520, 260, 50, 20
    xmax = max((c for _, c, _ in pts), default=1.0) * 1.1 or 1.0
    ymax = min(1.0, max((a for _, _, a in pts), default=1.0) * 1.2 + 0.05)

    def xy(c: float, a: float) -> tuple[float, float]:
        return left + (w - left - 20) * c / xmax, top + h * (1 - a / ymax)

    parts = [f'<svg width="{w}" height="{h + 50}" xmlns="http://www.w3.org/2000/svg" font-size="11">',
             f'<line x1="{left}" x2="{w - 10}" y1="{top + h}" y2="{top + h}" stroke="#333"/>',
             f'<line x1="{left}" x2="{left}" y1="{top}" y2="{top + h}" stroke="#333"/>',
             f'<text x="{w / 2}" y="{top + h + 30}" text-anchor="middle">seconds per item (max {xmax:.2f})</text>',
             f'<text x="12" y="{top + h / 2}" transform="rotate(-90 12 {top + h / 2})" text-anchor="middle">accuracy</text>']
    front = set(pareto_front(pts))
    line = sorted((p for p in pts if p[0] in front), key=lambda p: p[1])
    if len(line) > 1:
        coords = " ".join("%.1f,%.1f" % xy(c, a) for _, c, a in line)
        parts.append(f'<polyline points="{coords}" fill="none" stroke="#e15759" stroke-dasharray="4 3"/>')
    for i, (name, c, a) in enumerate(pts):
        x, y = xy(c, a)
        mark = "front" if name in front else ""
        parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{PALETTE[i % len(PALETTE)]}"><title>{_esc(name)}: '
                     f'{a:.3f} at {c:.2f} s/item {mark}</title></circle>'
                     f'<text x="{x + 7:.1f}" y="{y - 6:.1f}">{_esc(name)}{" *" if mark else ""}</text>')
    parts.append("</svg>")
    return "".join(parts)


def _heat_table(title_row: list[str], rows: list[tuple[str, list[float | None], list[str]]]) -> str:
    """A table whose cells are shaded by value (0..1)."""
    out = ["<table class='heat'><tr><th></th>" + "".join(f"<th>{_esc(t)}</th>" for t in title_row) + "</tr>"]
    for label, values, texts in rows:
        cells = []
        for v, t in zip(values, texts):
            shade = "" if v is None else f" style='background: rgba(78,121,167,{0.1 + 0.8 * v:.2f})'"
            cells.append(f"<td{shade}>{_esc(t)}</td>")
        out.append(f"<tr><th>{_esc(label)}</th>{''.join(cells)}</tr>")
    out.append("</table>")
    return "".join(out)


def routing_tables(rows: list[dict[str, Any]]) -> str:
    """Per router system: share of routed slots per expert, per task."""
    out = []
    for system, per_task in routed_counts(rows).items():
        experts = sorted({e for c in per_task.values() for e in c})
        table_rows = []
        for task, counts in per_task.items():
            total = sum(counts.values()) or 1
            vals = [counts.get(e, 0) / total for e in experts]
            table_rows.append((task, vals, [f"{v:.0%}" for v in vals]))
        out.append(f"<h3>{_esc(system)}</h3>" + _heat_table(experts, table_rows))
    return "".join(out) or "<p>No routed pipeline in this evaluation.</p>"


def agreement_table(rows: list[dict[str, Any]]) -> str:
    names, matrix = agreement(rows)
    if len(names) < 2:
        return "<p>Fewer than two single experts were evaluated.</p>"
    return _heat_table(names, [(a, row, ["-" if v is None else f"{v:.2f}" for v in row])
                               for a, row in zip(names, matrix)])


def render_report(rows: list[dict[str, Any]], *, title: str = "expertmix eval", meta: dict[str, Any] | None = None) -> str:
    """The whole report as one HTML string."""
    summary = summarize(rows)
    table = format_table(summary).splitlines()
    head = [c.strip() for c in table[0].strip("|").split("|")]
    body = [[c.strip() for c in ln.strip("|").split("|")] for ln in table[2:]]
    html_table = ("<table><tr>" + "".join(f"<th>{_esc(c)}</th>" for c in head) + "</tr>"
                  + "".join("<tr>" + "".join(f"<td>{_esc(c)}</td>" for c in r) + "</tr>" for r in body) + "</table>")
    meta_html = "".join(f"<li><b>{_esc(k)}</b>: {_esc(v)}</li>" for k, v in (meta or {}).items())
    oracle = f"<p>The {ORACLE} is right on an item when any single expert is.</p>" if ORACLE in summary["systems"] else ""
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{_esc(title)}</title>
<style>body{{font-family:sans-serif;margin:2em;max-width:1200px}} table{{border-collapse:collapse;margin:1em 0}}
td,th{{border:1px solid #ccc;padding:3px 7px;font-size:12px;text-align:left}} .heat td{{text-align:center}}</style>
</head><body><h1>{_esc(title)}</h1><ul>{meta_html}</ul>
<h2>Accuracy per task (95% Wilson interval)</h2>{accuracy_chart(summary)}{oracle}
<h2>Cost vs accuracy (Pareto front dashed, marked *)</h2>{cost_chart(summary)}
<h2>Experts the routers picked, per task</h2>{routing_tables(rows)}
<h2>Agreement between single experts (same extracted answer)</h2>{agreement_table(rows)}
<h2>Summary</h2>{html_table}
</body></html>
"""
