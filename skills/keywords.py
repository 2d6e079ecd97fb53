"""Skill keywords: parse, filter (Symbolic-MoE's rules), map onto a profile vocabulary, skill bank.

Symbolic-MoE samples an LLM five times for ``Keywords: a, b`` and keeps a keyword when it is at
most 20 characters and appears in at least 2 of the 5 samples (lower-cased, periods stripped).
A test keyword that no profile knows is mapped to its nearest profile keyword by the cosine
similarity of all-MiniLM-L6-v2 embeddings.

Example::

    >>> parse_keywords("Sure. Keywords: Algebra, word problems.")
    ['algebra', 'word problems']
    >>> filter_keywords([["algebra", "a"], ["algebra"], ["geometry"], [], []])
    ['algebra']
"""

from __future__ import annotations

import re
from collections import Counter
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from orchestrator.errors import ConfigError

if TYPE_CHECKING:
    from skills.embeddings import Embedder

MAX_KEYWORD_CHARS = 20
MIN_SAMPLE_VOTES = 2

_KEYWORDS_LINE = re.compile(r"keywords?\s*:\s*(.+)", re.IGNORECASE)


def normalize_keyword(raw: str) -> str:
    """Lower-case, periods stripped, surrounding quotes/markup/space trimmed, inner space collapsed."""
    kw = raw.lower().replace(".", "")
    kw = kw.strip(" \t\n\"'`*_-<>[](){}")
    return re.sub(r"\s+", " ", kw)


def parse_keywords(text: str) -> list[str]:
    """Keywords from one sample: the ``Keywords:`` line if present, else the first line; deduplicated."""
    m = _KEYWORDS_LINE.search(text or "")
    line = m.group(1) if m else (text or "").strip().split("\n")[0]
    line = line.split("\n")[0]
    out = [normalize_keyword(part) for part in re.split(r"[,;]", line)]
    return list(dict.fromkeys(kw for kw in out if kw))


def filter_keywords(
    samples: list[list[str]], *, min_votes: int = MIN_SAMPLE_VOTES, max_chars: int = MAX_KEYWORD_CHARS
) -> list[str]:
    """Keywords at most ``max_chars`` long that appear in at least ``min_votes`` samples.

    Each sample votes once per keyword. Most-voted first; ties keep first-seen order.
    """
    votes: Counter[str] = Counter()
    order: dict[str, int] = {}
    for sample in samples:
        for kw in dict.fromkeys(normalize_keyword(k) for k in sample):
            if kw and len(kw) <= max_chars:
                votes[kw] += 1
                order.setdefault(kw, len(order))
    kept = [kw for kw, n in votes.items() if n >= min_votes]
    return sorted(kept, key=lambda kw: (-votes[kw], order[kw]))


def load_skill_bank(path: str | Path | None = None) -> list[str]:
    """The skill bank (one keyword a line, ``#`` comments); default: the shipped ``skill_bank.txt``."""
    if path is None:
        text = (resources.files("skills") / "data" / "skill_bank.txt").read_text()
        where = "builtin:skill_bank.txt"
    else:
        p = Path(path)
        if not p.exists():
            raise ConfigError(f"skill bank {p}: no such file", hint="pass a text file with one keyword per line")
        text, where = p.read_text(), str(p)
    bank = [normalize_keyword(line) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    bank = list(dict.fromkeys(kw for kw in bank if kw))
    if not bank:
        raise ConfigError(f"skill bank {where} is empty", hint="add one skill keyword per line")
    return bank


class KeywordMapper:
    """Maps free keywords onto a fixed vocabulary (the profile keywords) by MiniLM cosine similarity.

    Known keywords map to themselves; the result is deduplicated, order kept (a question that
    names the same skill twice does not count it twice).

    Example::

        >>> m = KeywordMapper(["algebra", "anatomy"])
        >>> m.map(["Algebra", "bones of the hand"])  # doctest: +SKIP
        ['algebra', 'anatomy']
    """

    def __init__(self, vocabulary: Iterable[str], embedder: "Embedder | None" = None) -> None:
        self.vocabulary = list(dict.fromkeys(normalize_keyword(v) for v in vocabulary if normalize_keyword(v)))
        self._known = set(self.vocabulary)
        self._embedder = embedder
        self._matrix = None

    def load(self) -> None:
        """Embed the vocabulary (once)."""
        if self._matrix is None and self.vocabulary:
            self._matrix = self.embedder.encode_cached(self.vocabulary)

    @property
    def embedder(self) -> "Embedder":
        if self._embedder is None:
            from skills.embeddings import Embedder

            self._embedder = Embedder.shared()
        return self._embedder

    def nearest(self, keywords: list[str]) -> list[tuple[str, float]]:
        """(nearest vocabulary keyword, cosine) for each keyword; known ones score 1.0."""
        keywords = [normalize_keyword(k) for k in keywords]
        unknown = [k for k in dict.fromkeys(keywords) if k and k not in self._known]
        found: dict[str, tuple[str, float]] = {k: (k, 1.0) for k in keywords if k in self._known}
        if unknown and self.vocabulary:
            self.load()
            sims = self.embedder.encode_cached(unknown) @ self._matrix.T
            for k, row in zip(unknown, sims):
                j = int(row.argmax())
                found[k] = (self.vocabulary[j], float(row[j]))
        return [found[k] for k in keywords if k in found]

    def map(self, keywords: list[str]) -> list[str]:
        """Each keyword replaced by its nearest vocabulary keyword, deduplicated."""
        return list(dict.fromkeys(v for v, _ in self.nearest(keywords)))
