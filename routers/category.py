"""Category router (Composition of Experts): classify the question, then map category -> experts.

Step 1: a logistic-regression classifier over all-MiniLM-L6-v2 sentence embeddings assigns one of
the taxonomy categories (``math, code, medicine, science, law, business, humanities, writing,
general``). When its top probability is below ``threshold`` the question goes to ``general``
(served by a generalist), as CoE does. The classifier is numpy only (weights in an ``.npz``).
``encoder`` picks the features:

- ``minilm``: MiniLM embeddings (most accurate; ~9 ms per question, ~185 questions/s on 2 cores).
- ``static``: a static token table distilled from MiniLM (:mod:`routers.static_embed`), with its
  own classifier: ~50x the throughput for ~4 points of accuracy.
- ``cascade`` (the default): a non-English question goes to the multilingual e5 classifier; an
  English one to the static classifier, and those whose static top-class probability is below
  ``cascade_threshold`` (0.5) are re-classified, in one batch, by the ``cascade_encoder``
  classifier: ``e5`` (default since 2026-12-02; on the cross-source test set 0.734 accuracy vs
  0.659 with MiniLM as the second stage, at a lower file throughput), ``minilm``, or
  ``e5+minilm`` (the mean of both classifiers' probabilities: better on open questions about the
  world, worse on research passages, no better overall). The 0.5 was
  picked on validation data (held-out user prompts) when MiniLM was the second stage, and kept.
  A ``model_dir`` without static weights sends every English question to the second stage, one
  without e5 weights uses MiniLM there (each with a warning).

Optionally (``second_opinion: MODEL``, a registry model), the questions below ``threshold`` are not
sent to ``general`` at once: that model classifies them zero-shot, in context (one batch through the
run's dispatcher, a few tokens each, the way vLLM's semantic router does), and an answer naming a
category routes there; one that names none stays ``general``. The trace says which.

Step 2: a YAML category map names each category's experts, primary first then ordered fallbacks,
so ``k`` and budgets (max experts, max cost) can be honoured by walking down the list.

Example::

    >>> from routers.base import make_router
    >>> make_router("category", k=1, threshold=0.4).config()["threshold"]
    0.4
    >>> make_router("category", encoder="cascade", cascade_threshold=0.6).config()["cascade_threshold"]
    0.6
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from orchestrator.config import ExpertRegistry, load_yaml
from orchestrator.context import RunContext
from orchestrator.errors import ConfigError, ModelNotFoundError
from orchestrator.core import ExpertChoice, Question, Sampling
from orchestrator.prompts import build_request
from routers.base import ROUTERS, BaseRouter, Scored
from routers.text import language, window

log = logging.getLogger(__name__)

DATA_DIR = Path(__file__).resolve().parent / "data"
DEFAULT_MODEL_DIR = DATA_DIR
DEFAULT_MAP = DATA_DIR / "category_map.yaml"
GENERAL = "general"
ENCODERS = ("minilm", "static", "e5")  # sentence encoders (the embedding router accepts these)
CATEGORY_ENCODERS = (*ENCODERS, "cascade")
DEFAULT_ENCODER = "cascade"
# The cascade's second stage, for English prompts static is unsure of. ``e5+minilm`` averages the
# two classifiers' probabilities (their errors differ: e5 reads research passages better, MiniLM
# open questions about the world); measured a wash overall (docs/routers.md), so e5 stays default.
CASCADE_ENCODERS = ("e5", "e5+minilm", "minilm")
DEFAULT_CASCADE_ENCODER = "e5"
DEFAULT_CASCADE_THRESHOLD = 0.5
# MiniLM batches of the cascade's few unsure questions: sentence-transformers pads each batch to
# its longest text, and one long exam stem in a 128-batch padded 127 short prompts 4x (measured:
# 3.9 s -> 1.2 s CPU for the 127 unsure questions of the bench file).
CASCADE_BATCH = 16


def embed(texts: list[str], *, cache: bool = False, encoder: str = "minilm", batch_size: int = 128) -> np.ndarray:
    """Normalised embeddings of each text's window (:func:`routers.text.window`): MiniLM (memoised
    per text when ``cache``), the static table, or multilingual e5. Any length is accepted."""
    if encoder == "e5":
        from routers.multilingual_embed import E5Embedder

        return E5Embedder.shared().encode(texts)
    windows = [window(t) for t in texts]
    if encoder == "static":
        from routers.static_embed import StaticEmbedder

        return StaticEmbedder.shared().encode(windows)
    from skills.embeddings import Embedder

    emb = Embedder.shared()
    return emb.encode_cached(windows) if cache else emb.encode(windows, batch_size=batch_size)


def members(encoder: str) -> tuple[str, ...]:
    """The encoders of a cascade stage: ``"e5+minilm"`` -> ``("e5", "minilm")``."""
    return tuple(encoder.split("+"))


def weights_stem(encoder: str) -> str:
    """File stem of a trained classifier for ``encoder`` (features differ, so weights do too)."""
    return "category_router" if encoder == "minilm" else f"category_router_{encoder}"


class CategoryModel:
    """A softmax classifier over normalised embeddings: ``probs = softmax(X @ W.T + b)``."""

    def __init__(self, classes: list[str], weights: np.ndarray, bias: np.ndarray, meta: dict[str, Any] | None = None):
        if weights.shape[0] != len(classes) or bias.shape != (len(classes),):
            raise ConfigError(f"category model: {len(classes)} classes but weights {weights.shape}, bias {bias.shape}")
        self.classes = list(classes)
        self.weights = weights.astype(np.float32)
        self.bias = bias.astype(np.float32)
        self.meta = dict(meta or {})

    @property
    def temperature(self) -> float:
        """Calibration temperature fitted on held-out sources (1.0 when the model has none)."""
        return float(self.meta.get("temperature", 1.0))

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities, shape (n, n_classes)."""
        logits = (X.astype(np.float32, copy=False) @ self.weights.T + self.bias) / self.temperature
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)

    def save(self, out_dir: str | Path, stem: str = "category_router") -> Path:
        """Write ``<stem>.npz`` (weights) and ``<stem>.json`` (classes + meta)."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(out / f"{stem}.npz", weights=self.weights.astype(np.float16), bias=self.bias)
        (out / f"{stem}.json").write_text(json.dumps({"classes": self.classes, **self.meta}, indent=2) + "\n")
        return out

    @classmethod
    def load(cls, model_dir: str | Path, stem: str = "category_router") -> "CategoryModel":
        d = Path(model_dir)
        WEIGHTS_FILE, META_FILE = f"{stem}.npz", f"{stem}.json"
        if not (d / WEIGHTS_FILE).exists() or not (d / META_FILE).exists():
            raise ModelNotFoundError(
                f"no trained category router in {d} (needs {WEIGHTS_FILE} and {META_FILE})",
                hint="train one with `expertmix train-router --data FILE --out DIR` or leave model_dir unset",
            )
        meta = json.loads((d / META_FILE).read_text())
        with np.load(d / WEIGHTS_FILE) as z:
            weights, bias = z["weights"].astype(np.float32), z["bias"].astype(np.float32)
        classes = meta.pop("classes")
        return cls(classes, weights, bias, meta)


def load_category_map(path: str | Path | None, registry: ExpertRegistry) -> dict[str, list[str]]:
    """``{category: [primary, fallback, ...]}`` from YAML, checked against ``registry``.

    Without a file (or for categories the file does not name) the map is derived from the experts'
    ``categories:`` fields, cheapest first. Experts the registry lacks are dropped with a warning;
    a category left with no expert raises :class:`ConfigError`.
    """
    derived = derive_category_map(registry)
    if path is None:
        return derived
    data = load_yaml(path)
    raw = data.get("categories", data) if isinstance(data, dict) else None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a category map is a mapping `categories: {{name: [experts...]}}`")
    out = dict(derived)
    for cat, experts in raw.items():
        names = [experts] if isinstance(experts, str) else list(experts or [])
        kept = [n for n in names if n in registry.experts]
        if len(kept) < len(names):
            log.warning("category map %s: %s lists experts not in the registry: %s", path, cat,
                        sorted(set(names) - set(kept)))
        if kept:
            out[cat] = kept
        elif cat not in out:
            raise ConfigError(
                f"{path}: category {cat!r} has no expert of registry {registry.source}",
                hint=f"list some of: {', '.join(sorted(registry.experts))}",
            )
    return out


def derive_category_map(registry: ExpertRegistry) -> dict[str, list[str]]:
    """Each category's experts from their ``categories:`` fields, cheapest first."""
    out: dict[str, list[str]] = {}
    for expert in sorted(registry.experts.values(), key=lambda e: (e.cost, e.name)):
        for cat in expert.categories:
            out.setdefault(cat, []).append(expert.name)
    return out


def dump_category_map(mapping: dict[str, list[str]]) -> str:
    return yaml.safe_dump({"categories": mapping}, sort_keys=False)


SECOND_OPINION_TOKENS = 6
SECOND_OPINION_PROMPT = (
    "Classify the request below into exactly one of these categories: {categories}.\n"
    "(general = everyday questions, advice and chat; writing = essays, stories, emails, rewriting; "
    "humanities = history, philosophy, religion, the arts.)\n\n"
    "Request:\n{request}\n\nAnswer with the category name only.\nCategory:"
)


def parse_category(text: str, classes: list[str]) -> str | None:
    """The first of ``classes`` named in ``text`` (a word, any case), or None."""
    return next((w for w in re.findall(r"[a-z]+", text.lower()) if w in classes), None)


@ROUTERS.register("category")
class CategoryRouter(BaseRouter):
    """Classify into a category, below ``threshold`` fall back to ``general``, map to experts.

    ``encoder`` is ``minilm``, ``static`` or ``cascade`` (static first, MiniLM for questions whose
    static top probability is below ``cascade_threshold``); see the module docstring.
    """

    name = "category"

    def __init__(
        self, k: int = 1, threshold: float | None = None, model_dir: str | Path | None = None,
        category_map: str | Path | None = None, cache: bool = False, encoder: str = DEFAULT_ENCODER,
        cascade_threshold: float = DEFAULT_CASCADE_THRESHOLD, cascade_encoder: str = DEFAULT_CASCADE_ENCODER,
        second_opinion: str | None = None, seed: int = 0,
    ) -> None:
        super().__init__(k=k, seed=seed)
        for label, value in (("threshold", threshold), ("cascade_threshold", cascade_threshold)):
            if value is not None and not 0.0 <= value <= 1.0:
                raise ConfigError(f"category router: {label} must be in [0, 1], got {value}")
        if encoder not in CATEGORY_ENCODERS:
            raise ConfigError(f"category router: unknown encoder {encoder!r}",
                              hint=f"use one of: {', '.join(CATEGORY_ENCODERS)}")
        if cascade_encoder not in CASCADE_ENCODERS:
            raise ConfigError(f"category router: unknown cascade_encoder {cascade_encoder!r}",
                              hint=f"use one of: {', '.join(CASCADE_ENCODERS)}")
        self.threshold, self.cache, self.encoder = threshold, cache, encoder
        self.cascade_encoder = cascade_encoder
        self.cascade_threshold = float(cascade_threshold)
        self.second_opinion = second_opinion
        self.model_dir = Path(model_dir) if model_dir else None
        self.category_map = Path(category_map) if category_map else None
        self._models: dict[str, CategoryModel | None] = {}
        self._maps: tuple[int, dict[str, list[str]]] | None = None

    def config(self) -> dict[str, Any]:
        return {"k": self.k, "threshold": self.threshold,
                "model_dir": str(self.model_dir) if self.model_dir else None,
                "category_map": str(self.category_map) if self.category_map else None, "cache": self.cache,
                "encoder": self.encoder, "cascade_threshold": self.cascade_threshold,
                "cascade_encoder": self.cascade_encoder, "second_opinion": self.second_opinion, "seed": self.seed}

    def model_for(self, encoder: str) -> CategoryModel:
        """The trained classifier over ``encoder`` features (``minilm`` or ``static``), loaded once."""
        if self._models.get(encoder) is None:
            self._models[encoder] = CategoryModel.load(self.model_dir or DEFAULT_MODEL_DIR, weights_stem(encoder))
        return self._models[encoder]

    @property
    def model(self) -> CategoryModel:
        """The classifier whose classes and threshold decide (the second stage's for ``cascade``;
        e5's for the ``e5+minilm`` ensemble)."""
        return self.model_for(members(self._deep())[0] if self.encoder == "cascade" else self.encoder)

    def _deep(self) -> str:
        """The cascade's second stage: ``cascade_encoder``, or MiniLM when ``model_dir`` has no e5 weights."""
        if self.cascade_encoder != "minilm" and self._stage("e5") is not None:
            return self.cascade_encoder
        return "minilm"

    def _stage(self, encoder: str) -> CategoryModel | None:
        """An optional cascade stage's classifier, or None (with one warning) when ``model_dir`` lacks it."""
        if encoder not in self._models:
            try:
                model = self.model_for(encoder)
            except ModelNotFoundError:
                log.warning("category router: %s has no %s classifier; the cascade skips that stage "
                            "(train one with `expertmix train-router --encoder %s`)",
                            self.model_dir or DEFAULT_MODEL_DIR, encoder, encoder)
                self._models[encoder] = None
                return None
            if encoder != "minilm" and model.classes != self.model_for("minilm").classes:
                raise ConfigError(f"category router: the {encoder} and MiniLM classifiers in {self.model_dir} "
                                  "have different classes", hint="retrain both on the same data")
        return self._models[encoder]

    def effective_threshold(self) -> float:
        """The configured threshold, else the one stored with the trained model (else 0.35)."""
        return float(self.threshold if self.threshold is not None else self.model.meta.get("threshold", 0.35))

    def warm_up(self, ctx: RunContext) -> None:
        """Load the category map, the classifier(s) and the encoder(s) this router uses."""
        self._map_for(ctx.registry)
        if self.second_opinion:
            ctx.registry.model(self.second_opinion)  # an unknown model fails here, naming the valid ones
        warm = [f"warm up {c}" for c in self.model.classes]
        stages = [self.encoder] if self.encoder != "cascade" else ["static", "e5"]
        for encoder in stages:
            if self.encoder != "cascade" or self._stage(encoder) is not None:
                embed(warm, encoder=encoder)
        if self.encoder == "cascade" and "minilm" in members(self._deep()):
            embed(warm, encoder="minilm")

    def _map_for(self, registry: ExpertRegistry) -> dict[str, list[str]]:
        if self._maps is None or self._maps[0] != id(registry):
            path = self.category_map or (DEFAULT_MAP if registry.source == "builtin:experts.yaml" else None)
            self._maps = (id(registry), load_category_map(path, registry))
        return self._maps[1]

    def classify(self, texts: list[str]) -> tuple[list[str], np.ndarray]:
        """(category per text after the confidence fallback, class-probability matrix)."""
        probs, _ = self.probabilities(texts)
        return self.categories_from_probs(probs), probs

    def probabilities(self, texts: list[str]) -> tuple[np.ndarray, list[str]]:
        """(class probabilities, the encoder that decided each text); see :meth:`_decide`."""
        probs, stages, _ = self._decide(texts)
        return probs, stages

    def _decide(self, texts: list[str]) -> tuple[np.ndarray, list[str], np.ndarray]:
        """(class probabilities, the encoder that decided each text, which texts are non-English).

        ``cascade``: non-English texts (:func:`routers.text.language`) go to the multilingual e5
        classifier; English ones to the static classifier, and those it is unsure of (top
        probability below ``cascade_threshold``) to the second stage (``cascade_encoder``), in small batches.
        """
        n = len(texts)
        probs = np.zeros((n, len(self.model.classes)), dtype=np.float32)
        if self.encoder != "cascade":
            if n:
                probs = self.model.predict_proba(embed(texts, cache=self.cache, encoder=self.encoder))
            return probs, [self.encoder] * n, np.zeros(n, dtype=bool)
        deep = self._deep()
        stage = np.array(["unsure"] * n, dtype=object)
        non_english = np.zeros(n, dtype=bool)
        if self._stage("e5") is not None:
            non_english = np.array([language(t) not in ("en", "und") for t in texts], dtype=bool)
            stage[non_english] = "e5"
        if self._stage("static") is not None:
            stage[stage == "unsure"] = "static"
        for encoder in ("e5", "static"):
            idx = np.flatnonzero(stage == encoder)
            if len(idx):
                probs[idx] = self.probabilities_with(encoder, [texts[i] for i in idx])
        stage[np.flatnonzero((stage == "static") & (probs.max(axis=1) < self.cascade_threshold))] = "unsure"
        idx = np.flatnonzero(stage == "unsure")
        if len(idx):  # one second-stage pass for every unsure English question
            probs[idx] = self.probabilities_with(deep, [texts[i] for i in idx], batch_size=CASCADE_BATCH)
            stage[idx] = deep
        return probs, [str(s) for s in stage], non_english

    def probabilities_with(self, encoder: str, texts: list[str], batch_size: int = 128) -> np.ndarray:
        """Class probabilities of ``texts`` from the ``encoder`` classifier alone, or the mean of
        an ensemble's (``e5+minilm``)."""
        parts = [self.model_for(e).predict_proba(embed(texts, cache=self.cache, encoder=e, batch_size=batch_size))
                 for e in members(encoder)]
        return parts[0] if len(parts) == 1 else np.mean(parts, axis=0)

    def categories_from_probs(self, probs: np.ndarray) -> list[str]:
        threshold, classes = self.effective_threshold(), self.model.classes
        best = probs.argmax(axis=1) if len(probs) else []
        return [classes[j] if probs[i, j] >= threshold else GENERAL for i, j in enumerate(best)]

    def score(self, questions: list[Question], ctx: RunContext) -> list[Scored]:
        mapping = self._map_for(ctx.registry)
        probs, _, non_english = self._decide([q.text for q in questions])
        cats = self.categories_from_probs(probs)
        classes = self.model.classes
        unsure = [i for i, c in enumerate(cats) if c == GENERAL and classes[int(probs[i].argmax())] != GENERAL]
        second = self._second_opinions([questions[i] for i in unsure], ctx) if self.second_opinion and unsure else {}
        out = []
        for i, cat in enumerate(cats):
            p = {c: float(probs[i, j]) for j, c in enumerate(classes)}
            top = max(p, key=p.get)
            opinion = second.get(questions[i].id)
            if opinion:
                cat = opinion[0]
            ranked, notes = self._ranked(cat, p, mapping, ctx.registry)
            if opinion:
                notes.append(f"category router: {top} at {p[top]:.2f} is below the threshold; second opinion from "
                             f"{self.second_opinion}: {opinion[0]} ({opinion[1]!r})")
            elif cat == GENERAL and top != GENERAL:
                notes.append(f"category router: {top} at {p[top]:.2f} is below the threshold; routed to general"
                             + (f" (second opinion from {self.second_opinion} named no category)" if self.second_opinion else ""))
            if non_english[i]:
                notes.append("category router: non-English prompt; classified by the multilingual encoder")
            out.append(Scored(ranked, category=cat, confidence=p[top], notes=notes))
        return out

    def _second_opinions(self, questions: list[Question], ctx: RunContext) -> dict[str, tuple[str, str]]:
        """Zero-shot, in-context classification of the questions the classifier is unsure of, by the
        registry model ``second_opinion`` (one batch): ``{question id: (category, the model's words)}``
        for the answers that name a category; the rest stay ``general``."""
        spec = ctx.registry.model(self.second_opinion)
        classes = self.model.classes
        sampling = Sampling(temperature=0.0, max_tokens=SECOND_OPINION_TOKENS)
        reqs = [build_request(ctx.key("route", q.id, "second-opinion"), spec, None,
                              SECOND_OPINION_PROMPT.format(categories=", ".join(classes),
                                                           request=window(q.text, 1500, 500)), sampling)
                for q in questions]
        done = ctx.dispatcher.run_batches({spec.name: reqs}, label="route", progress=ctx.progress)
        out: dict[str, tuple[str, str]] = {}
        for q, r in zip(questions, reqs):
            text = done[r.key].text.strip() if r.key in done else ""
            cat = parse_category(text, classes)
            if cat:
                out[q.id] = (cat, text[:40])
        return out

    def _ranked(
        self, cat: str, p: dict[str, float], mapping: dict[str, list[str]], registry: ExpertRegistry
    ) -> tuple[list[ExpertChoice], list[str]]:
        """The category's experts in map order, then every other expert by its categories' probability."""
        notes: list[str] = []
        primary = mapping.get(cat) or mapping.get(GENERAL) or []
        if not mapping.get(cat):
            notes.append(f"category router: no expert mapped to {cat!r}; used {GENERAL!r}")
        score = p.get(cat, 0.0)
        ranked = [ExpertChoice(name=n, score=round(score, 4)) for n in primary]
        rest = {}
        for name in registry.experts:
            if name not in primary:
                rest[name] = max([p.get(c, 0.0) for c, ns in mapping.items() if name in ns] or [0.0])
        for name in sorted(rest, key=lambda n: (-rest[n], registry.expert(n).cost, n)):
            ranked.append(ExpertChoice(name=name, score=round(rest[name], 4)))
        return ranked, notes
