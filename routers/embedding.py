"""Embedding router (RouterRetriever): route to the expert whose example questions are nearest.

Each expert is represented by the all-MiniLM-L6-v2 embeddings of its example questions
(``ExpertSpec.examples``, its description, and any ``examples_files``: YAML ``{expert: [question,
...]}``). A question's score for an expert is the mean of its ``top_n`` highest cosine similarities
to that expert's examples (``top_n=1`` is the max). Adding an expert needs no training: it is
indexed the first time a registry containing it is seen, or through :meth:`add_examples`.
``encoder: static`` uses the fast static token table (:mod:`routers.static_embed`) instead of MiniLM.

With the default registry the router also loads ``routers/data/expert_examples.yaml`` (built by
:mod:`routers.expert_examples`: user-style prompts and benchmark stems mapped through the category
map to the expert serving each category; ``default_examples=False`` turns it off). Held-out
user-prompt accuracy (chosen expert == the category map's primary for the gold category), 135
prompts: MiniLM 0.793 -> 0.941 with the file, static 0.541 -> 0.800.

Example::

    >>> from routers.base import make_router
    >>> make_router("embedding", k=2, top_n=3).config()["top_n"]
    3
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from orchestrator.config import ExpertRegistry, load_yaml
from orchestrator.context import RunContext
from orchestrator.errors import ConfigError
from orchestrator.core import Question, check_question
from routers.base import ROUTERS, BaseRouter, Scored, ranked_by

DEFAULT_EXAMPLES = Path(__file__).resolve().parent / "data" / "expert_examples.yaml"
BUILTIN_SOURCE = "builtin:experts.yaml"


def load_examples_file(path: str | Path) -> dict[str, list[str]]:
    """``{expert: [example question, ...]}`` from a YAML file."""
    data = load_yaml(path)
    if not isinstance(data, dict) or not all(isinstance(v, list) for v in data.values()):
        raise ConfigError(f"{path}: an examples file maps expert names to lists of example questions",
                          hint="write `coder: [\"How do I reverse a list?\", ...]`")
    return {str(k): [str(x) for x in v] for k, v in data.items()}


@ROUTERS.register("embedding")
class EmbeddingRouter(BaseRouter):
    """Nearest experts by similarity between the question and each expert's example questions."""

    name = "embedding"

    def __init__(
        self, k: int = 1, top_n: int = 3, examples_files: list[str] | None = None,
        use_description: bool = True, cache: bool = False, encoder: str = "minilm", seed: int = 0,
        default_examples: bool = True,
    ) -> None:
        from routers.category import ENCODERS

        super().__init__(k=k, seed=seed)
        if top_n < 1:
            raise ConfigError(f"embedding router: top_n must be >= 1, got {top_n}")
        self.top_n = top_n
        self.examples_files = [str(p) for p in examples_files or []]
        if encoder not in ENCODERS:
            raise ConfigError(f"embedding router: unknown encoder {encoder!r}", hint=f"use one of: {', '.join(ENCODERS)}")
        self.use_description, self.cache, self.encoder = use_description, cache, encoder
        self.default_examples = default_examples
        self._extra: dict[str, list[str]] = {}
        self._texts: dict[str, list[str]] = {}
        self._vecs: dict[str, np.ndarray] = {}
        self._files: dict[str, tuple[float, dict[str, list[str]]]] = {}

    def config(self) -> dict[str, Any]:
        return {"k": self.k, "top_n": self.top_n, "examples_files": list(self.examples_files),
                "use_description": self.use_description, "cache": self.cache,
                "encoder": self.encoder, "seed": self.seed, "default_examples": self.default_examples}

    def add_examples(self, expert: str, examples: list[str]) -> None:
        """Give ``expert`` more example questions (no retraining; indexed on next use)."""
        cleaned = [check_question(x, where=f"example of {expert}") for x in examples]
        self._extra.setdefault(expert, []).extend(cleaned)
        self._vecs.pop(expert, None)

    def warm_up(self, ctx: RunContext) -> None:
        self._index(ctx.registry)

    def examples_for(self, registry: ExpertRegistry) -> dict[str, list[str]]:
        """Every registry expert's example texts (spec examples, description, files, added ones).

        The shipped ``expert_examples.yaml`` counts as a file for the default registry only (its
        expert names mean those experts) unless ``default_examples`` is off.
        """
        files: dict[str, list[str]] = {}
        paths = list(self.examples_files)
        if self.default_examples and registry.source == BUILTIN_SOURCE and DEFAULT_EXAMPLES.exists():
            paths.insert(0, str(DEFAULT_EXAMPLES))
        for path in paths:
            for name, texts in self._examples_file(path).items():
                files.setdefault(name, []).extend(texts)
        out = {}
        for name, spec in registry.experts.items():
            texts = list(spec.examples) + files.get(name, []) + self._extra.get(name, [])
            if self.use_description and spec.description:
                texts.append(spec.description)
            out[name] = list(dict.fromkeys(t.strip() for t in texts if t and t.strip()))
        if not any(out.values()):
            raise ConfigError(f"embedding router: no expert of {registry.source} has examples or a description",
                              hint="add `examples:` to the experts or pass examples_files")
        return out

    def _examples_file(self, path: str) -> dict[str, list[str]]:
        """An examples file, parsed once per modification time (routing calls this per batch)."""
        mtime = Path(path).stat().st_mtime if Path(path).exists() else -1.0
        if path not in self._files or self._files[path][0] != mtime:
            self._files[path] = (mtime, load_examples_file(path))
        return self._files[path][1]

    def _index(self, registry: ExpertRegistry) -> dict[str, np.ndarray]:
        """Embeddings per expert; only experts whose example texts changed are (re-)encoded."""
        from routers.category import embed

        wanted = self.examples_for(registry)
        stale = [n for n, texts in wanted.items() if texts and (n not in self._vecs or self._texts.get(n) != texts)]
        if stale:
            flat = [t for n in stale for t in wanted[n]]
            vecs = embed(flat, cache=True, encoder=self.encoder)  # memoised: later routers reuse them
            start = 0
            for n in stale:
                self._vecs[n] = vecs[start:start + len(wanted[n])]
                self._texts[n] = wanted[n]
                start += len(wanted[n])
        return {n: self._vecs[n] for n in wanted if wanted[n]}

    def scores(self, texts: list[str], registry: ExpertRegistry) -> tuple[list[str], np.ndarray]:
        """(expert names, similarity scores of shape (len(texts), n_experts))."""
        from routers.category import embed

        index = self._index(registry)
        names = list(index)
        q = embed(texts, cache=self.cache, encoder=self.encoder)
        out = np.zeros((len(texts), len(names)), dtype=np.float32)
        for j, name in enumerate(names):
            sims = q @ index[name].T
            n = min(self.top_n, sims.shape[1])
            out[:, j] = np.sort(sims, axis=1)[:, -n:].mean(axis=1)
        return names, out

    def score(self, questions: list[Question], ctx: RunContext) -> list[Scored]:
        names, sims = self.scores([q.text for q in questions], ctx.registry)
        out = []
        for i in range(len(questions)):
            ranked = ranked_by({n: float(sims[i, j]) for j, n in enumerate(names)}, ctx.registry)
            top = np.exp(sims[i] * 20)  # softmax over experts, temperature 0.05, as a confidence
            cats = ctx.registry.expert(ranked[0].name).categories
            out.append(Scored(ranked, category=cats[0] if cats else None,
                              confidence=float(top.max() / top.sum())))
        return out
