"""Fusion benchmark on held-out ARC-Easy, SciQ, BoolQ and PIQA (test split: never trained on).

One run prints: accuracy (95% Wilson CI) of each single expert, token fusion (uniform and
PackLLM-perplexity weights), learned latent fusion (``--fuser DIR``), text fusion (synthesis) on a
subset; time per question; and fused decoding time against the sum of the single models' forward
time on a few free-form questions (with the tokens each peer was fed: linear, not quadratic).

    flock /tmp/expertmix-heavy.lock .venv/bin/python bench/latent_fusion.py --per-task 20 --fuser fusers/default

Models run in this process with transformers (float32, ``--device auto``: CUDA when available).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from aggregators.latent.data import BENCH_TASKS, load_mc  # noqa: E402
from aggregators.latent.train import MC_SYSTEM, accuracy_ci, option_scores, peer_cache  # noqa: E402
from orchestrator.config import ExpertRegistry  # noqa: E402
from orchestrator.prompts import SYNTHESIS_SYSTEM, synthesis_user_prompt  # noqa: E402
from workers.fusion.lm import load_lm, set_torch_threads  # noqa: E402
from workers.fusion.token_fusion import (  # noqa: E402
    Member, choice_scores, fuse_choices, fuse_generate, perplexity_weights, prompt_nll)

MODELS = ("qwen-coder-0.5b", "smollm2-135m", "gemma3-270m")
LETTERS = "ABCDEFGHIJ"
FREE_FORM = ["Why is the sky blue?", "What is the capital of Australia?", "Explain what a prime number is."]


def mc_rows(lms, items, fuser):
    rows = []
    for it in items:
        t0 = time.perf_counter()
        per_model, nlls = [], []
        for lm in lms:
            text, span = lm.render(MC_SYSTEM, it.question)
            per_model.append(choice_scores(lm, lm.prompt_ids(MC_SYSTEM, it.question), it.choices))
            nlls.append(prompt_nll(lm, text, span))
        row = {"task": it.task, "gold": it.gold, "single": [_argmax(s) for s in per_model],
               "uniform": _argmax(fuse_choices(per_model, [1.0] * len(lms))),
               "ppl": _argmax(fuse_choices(per_model, perplexity_weights(nlls))), "token_s": time.perf_counter() - t0}
        if fuser is not None:
            import torch

            t1 = time.perf_counter()
            with torch.no_grad():
                row["learned"] = int(torch.argmax(option_scores(fuser, it, peer_cache(fuser, it))))
            row["learned_s"] = time.perf_counter() - t1
        rows.append(row)
    return rows


def text_fusion(lms, items, max_tokens):
    """Each model answers the lettered question, then the aggregator model synthesises (greedy)."""
    ok, secs = [], []
    for it in items:
        t0 = time.perf_counter()
        q = it.question + "\n" + "\n".join(f"{LETTERS[i]}. {c}" for i, c in enumerate(it.choices)) + "\nAnswer with the letter."
        answers = [fuse_generate([Member(lm, lm.prompt_ids(MC_SYSTEM, q))], max_tokens=max_tokens).text for lm in lms]
        agg = lms[0]
        final = fuse_generate([Member(agg, agg.prompt_ids(SYNTHESIS_SYSTEM, synthesis_user_prompt(q, answers)))],
                              max_tokens=max_tokens).text
        ok.append(_letter(final, it.choices) == it.gold)
        secs.append(time.perf_counter() - t0)
    return ok, secs


def decode_timing(lms, max_tokens):
    out = []
    for q in FREE_FORM:
        members = [Member(lm, lm.prompt_ids("Answer briefly.", q), 1.0) for lm in lms]
        fused = fuse_generate(members, max_tokens=max_tokens)
        n = len(fused.token_ids)
        singles = {m.lm.name: fuse_generate([m], max_tokens=n).forward_s[m.lm.name] for m in members}
        out.append({"question": q, "tokens": n, "fused_steps": fused.fused_steps, "fused_decode_s": round(fused.decode_s, 3),
                    "sum_single_forward_s": round(sum(singles.values()), 3),
                    "ratio": round(fused.decode_s / max(1e-9, sum(singles.values())), 3),
                    "fed_tokens": fused.fed_tokens, "prompt_tokens": {m.lm.name: len(m.prompt_ids) for m in members}})
    return out


def _argmax(xs):
    return max(range(len(xs)), key=xs.__getitem__)


def _letter(text, choices):
    m = re.search(r"\b([A-J])\b", text)
    if m and LETTERS.index(m.group(1)) < len(choices):
        return LETTERS.index(m.group(1))
    low = text.lower()
    hits = [i for i, c in enumerate(choices) if c.lower() in low]
    return hits[0] if hits else -1


def summarise(rows, names, text_ok, text_s, timing):
    table = {}
    for t in [*BENCH_TASKS, "mean"]:
        sel = [r for r in rows if t == "mean" or r["task"] == t]
        if not sel:
            continue
        entry = {n: accuracy_ci([r["single"][i] == r["gold"] for r in sel]) for i, n in enumerate(names)}
        entry["token_fusion_uniform"] = accuracy_ci([r["uniform"] == r["gold"] for r in sel])
        entry["token_fusion_ppl"] = accuracy_ci([r["ppl"] == r["gold"] for r in sel])
        if "learned" in sel[0]:
            entry["learned_fusion"] = accuracy_ci([r["learned"] == r["gold"] for r in sel])
        table[t] = entry
    secs = {"token_fusion_s_per_q": round(sum(r["token_s"] for r in rows) / len(rows), 3)}
    if rows and "learned_s" in rows[0]:
        secs["learned_fusion_s_per_q"] = round(sum(r["learned_s"] for r in rows) / len(rows), 3)
    if text_s:
        secs["text_fusion_s_per_q"] = round(sum(text_s) / len(text_s), 3)
    return {"accuracy": table, "text_fusion": accuracy_ci(text_ok) if text_ok else None, "seconds": secs,
            "decode_timing": timing}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-task", type=int, default=20)
    ap.add_argument("--fuser", type=Path, help="a trained fuser dir (expertmix fuse train --out DIR)")
    ap.add_argument("--text-per-task", type=int, default=3, help="items per task for text fusion (slow)")
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--json", type=Path, help="also write the summary here")
    args = ap.parse_args()
    reg = ExpertRegistry.default()
    set_torch_threads()
    lms = [load_lm(reg.model(m), args.device) for m in MODELS]
    fuser = None
    if args.fuser:
        from workers.fusion.mot import LatentFuser

        fuser = LatentFuser.load(args.fuser, {lm.name: lm for lm in lms})
    items = [it for t in BENCH_TASKS for it in load_mc(t, split="test", limit=args.per_task, seed=args.seed)]
    rows = mc_rows(lms, items, fuser)
    print("multiple choice done:", json.dumps(summarise(rows, list(MODELS), [], [], [])), file=sys.stderr, flush=True)
    sub = [it for t in BENCH_TASKS for it in load_mc(t, split="test", limit=args.text_per_task, seed=args.seed)]
    text_ok, text_s = text_fusion(lms, sub, args.max_tokens) if args.text_per_task else ([], [])
    summary = summarise(rows, list(MODELS), text_ok, text_s, decode_timing(lms, args.max_tokens))
    summary["config"] = {"per_task": args.per_task, "text_per_task": args.text_per_task, "fuser": str(args.fuser or ""),
                         "device": lms[0].device}
    print(json.dumps(summary, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
