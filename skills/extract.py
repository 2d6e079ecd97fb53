"""Skill extraction: which skills (keywords) a question needs, two ways behind one contract.

- ``llm``: Symbolic-MoE's way. A model (any registered model: a local vLLM engine or a hosted
  one through litellm) is asked for 2-5 keywords as ``Keywords: a, b``, sampled 5 times at
  temperature 0.7; a keyword survives if it is <= 20 characters and in >= 2 of the 5 samples.
  All questions go to the dispatcher as ONE batch for that model.
- ``embedding``: fast on CPU. The nearest keywords of a skill bank to the question
  (all-MiniLM-L6-v2 cosine), top ``n`` above a threshold.

Example::

    >>> from skills.extract import make_extractor
    >>> make_extractor("embedding", top_n=2).config()["top_n"]
    2
"""

from __future__ import annotations

import hashlib
import logging
import re
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from orchestrator.context import RunContext
from orchestrator.errors import BackendError, ConfigError
from orchestrator.prompts import build_request
from orchestrator.registry import Registry
from orchestrator.core import Question, Sampling
from skills.keywords import filter_keywords, load_skill_bank, parse_keywords

log = logging.getLogger(__name__)

EXAMPLE_KEYWORDS = ("psychology", "virology", "behavioral theory", "microbiology", "diplomacy", "political science",
                    "property law", "finance", "business")
KEYWORD_PROMPT = (
    "Question: {question}\n\n"
    "What are the core knowledge, subjects or skills needed to solve this problem? "
    f"List 2-5 keywords separated by commas. Example keywords: {', '.join(EXAMPLE_KEYWORDS)}. "
    "Give ONLY the keywords, no other words or explanation.\n\n"
    "Follow this format: Keywords: <keyword1>, <keyword2>..."
)


@runtime_checkable
class SkillExtractor(Protocol):
    """Questions in, one list of skill keywords per question out (in order)."""

    name: str

    def extract(self, questions: list[Question], ctx: RunContext) -> list[list[str]]: ...

    def config(self) -> dict[str, Any]: ...


EXTRACTORS: Registry[type] = Registry("skill extractor", "expertmix.extractors")


def make_extractor(name: str, **params: Any) -> SkillExtractor:
    """Instantiate a registered skill extractor (``llm`` or ``embedding``) by name."""
    cls = EXTRACTORS.get(name, where="skill extractor")
    return cls(**params)


def stable_seed(*parts: object) -> int:
    """A 32-bit seed from any parts, stable across processes (unlike ``hash``)."""
    digest = hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little")


def drop_echoes(keywords: list[str], question: str) -> list[str]:
    """Drop keywords copied from the prompt's example list that nothing in the question supports.

    Small models (SmolLM2-135M measured here) often answer with the example list verbatim; a
    copied example is kept only when one of its words occurs in the question.
    """
    words = set(re.findall(r"[a-z]+", question.lower()))
    return [kw for kw in keywords if kw not in EXAMPLE_KEYWORDS or words & set(kw.split())]


@EXTRACTORS.register("llm")
class LLMSkillExtractor:
    """Symbolic-MoE keyword extraction with an LLM (5 samples at T=0.7, keep keywords in >= 2).

    ``drop_echoed_examples`` (default on; off is the paper's exact behaviour) drops example keywords
    the model merely copied from the prompt (see :func:`drop_echoes`).

    ``model`` names a registry model; ``expert`` uses that expert's model instead; with neither,
    the registry's ``aggregator_model`` (else its first chat model) extracts. ``use_n`` asks for
    the samples as one request with ``n`` (backends that support it); otherwise one request per
    sample with its own seed.
    """

    name = "llm"

    def __init__(
        self, model: str | None = None, *, expert: str | None = None, samples: int = 5,
        temperature: float = 0.7, min_votes: int = 2, max_chars: int = 20, max_tokens: int = 48,
        use_n: bool = True, drop_echoed_examples: bool = True,
    ) -> None:
        if samples < 1 or not 1 <= min_votes <= samples:
            raise ConfigError(f"llm skill extractor: need samples >= 1 and 1 <= min_votes <= samples, got "
                              f"samples={samples}, min_votes={min_votes}")
        self.model, self.expert, self.samples = model, expert, samples
        self.temperature, self.min_votes, self.max_chars = temperature, min_votes, max_chars
        self.max_tokens, self.use_n = max_tokens, use_n
        self.drop_echoed_examples = drop_echoed_examples

    def config(self) -> dict[str, Any]:
        return {"model": self.model, "expert": self.expert, "samples": self.samples,
                "temperature": self.temperature, "min_votes": self.min_votes, "max_chars": self.max_chars,
                "max_tokens": self.max_tokens, "use_n": self.use_n, "drop_echoed_examples": self.drop_echoed_examples}

    def resolve_model(self, ctx: RunContext) -> str:
        """The registry model that extracts."""
        reg = ctx.registry
        if self.model:
            return reg.model(self.model).name
        if self.expert:
            return reg.model_of(self.expert).name
        if reg.aggregator_model:
            return reg.aggregator_model
        chat = [m for m in reg.used_models() if reg.models[m].chat]
        return (chat or reg.used_models())[0]

    def extract(self, questions: list[Question], ctx: RunContext) -> list[list[str]]:
        if not questions:
            return []
        spec = ctx.registry.model(self.resolve_model(ctx))
        per_question = 1 if self.use_n else self.samples
        requests = []
        for q in questions:
            for s in range(per_question):
                sampling = Sampling(temperature=self.temperature, max_tokens=self.max_tokens,
                                    n=self.samples if self.use_n else 1, seed=stable_seed(ctx.seed, q.id, s))
                key = ctx.key("skills", q.id, str(s))
                requests.append(build_request(key, spec, None, KEYWORD_PROMPT.format(question=q.text), sampling))
        done = ctx.dispatcher.run_batches({spec.name: requests}, label="skills", progress=ctx.progress)
        out = []
        for q in questions:
            texts = self._samples(q, done, ctx, per_question)
            kept = filter_keywords([parse_keywords(t) for t in texts], min_votes=self.min_votes,
                                   max_chars=self.max_chars)
            out.append(drop_echoes(kept, q.text) if self.drop_echoed_examples else kept)
        return out

    def _samples(self, q: Question, done: dict, ctx: RunContext, per_question: int) -> list[str]:
        texts: list[str] = []
        for s in range(per_question):
            comp = done.get(ctx.key("skills", q.id, str(s)))
            if comp is None:
                raise BackendError(f"skill extraction: no completion came back for question {q.id!r}",
                                   hint="check the extractor model's backend logs", transient=True)
            texts.extend(comp.texts or [comp.text])
        if len(texts) < self.samples:
            msg = (f"skill extraction: the backend returned {len(texts)} of {self.samples} samples for {q.id!r} "
                   "(it ignores n); set use_n=False to send one request per sample")
            log.warning(msg)
            ctx.notes.append(msg)
        return texts


@EXTRACTORS.register("embedding")
class EmbeddingSkillExtractor:
    """The skill-bank keywords nearest to the question (MiniLM cosine): top ``top_n`` >= ``threshold``.

    ``vocabulary`` overrides the bank (e.g. the profile keywords, so no mapping is needed later).
    ``head_chars`` > 0: a longer text also gets the top ``head_n`` keywords of its first ``head_chars``
    characters, put first. A long prompt's opening says what is asked ("Write a book review ...")
    while its body says what about (the book), and the body dominates a whole-text embedding.
    """

    name = "embedding"

    def __init__(
        self, bank: str | Path | None = None, *, top_n: int = 3, threshold: float = 0.2,
        vocabulary: list[str] | None = None, head_chars: int = 0, head_n: int = 2,
    ) -> None:
        if top_n < 1 or head_n < 1 or head_chars < 0:
            raise ConfigError(f"embedding skill extractor: need top_n >= 1, head_n >= 1, head_chars >= 0; got "
                              f"{top_n}, {head_n}, {head_chars}")
        self.bank_path, self.top_n, self.threshold = bank, top_n, threshold
        self.head_chars, self.head_n = head_chars, head_n
        self._vocabulary = list(vocabulary) if vocabulary is not None else None
        self._matrix = None

    def config(self) -> dict[str, Any]:
        return {"bank": str(self.bank_path) if self.bank_path else None, "top_n": self.top_n,
                "threshold": self.threshold, "head_chars": self.head_chars, "head_n": self.head_n}

    @property
    def vocabulary(self) -> list[str]:
        if self._vocabulary is None:
            self._vocabulary = load_skill_bank(self.bank_path)
        return self._vocabulary

    def load(self) -> None:
        """Embed the skill bank (once)."""
        if self._matrix is None:
            from skills.embeddings import Embedder

            self._matrix = Embedder.shared().encode_cached(self.vocabulary)

    def extract(self, questions: list[Question], ctx: RunContext) -> list[list[str]]:
        return self.extract_texts([q.text for q in questions])

    def extract_texts(self, texts: list[str]) -> list[list[str]]:
        """Keywords for raw texts (no context needed: nothing runs on a model backend)."""
        if not texts:
            return []
        from skills.embeddings import Embedder

        emb = Embedder.shared()
        found = self.keywords_from_vectors(emb.encode(texts))
        long = [i for i, t in enumerate(texts) if self.head_chars and len(t) > self.head_chars]
        if long:
            heads = self.keywords_from_vectors(emb.encode([texts[i][: self.head_chars] for i in long]), self.head_n)
            for i, kws in zip(long, heads):
                found[i] = list(dict.fromkeys([*kws, *found[i]]))
        return found

    def keywords_from_vectors(self, vectors: Any, top_n: int | None = None) -> list[list[str]]:
        """Keywords for already-embedded texts (normalised MiniLM vectors, one row per text)."""
        self.load()
        sims = vectors @ self._matrix.T
        out = []
        for row in sims:
            top = row.argsort()[::-1][: top_n or self.top_n]
            out.append([self.vocabulary[j] for j in top if row[j] >= self.threshold])
        return out
