"""Shared character coordinates across models whose templates and tokenizers differ.

Every model renders the same question in its own template and tokenizes it its own way. To say
which peer tokens a primary token may see, each token gets the character offset where its text
ends in CONTENT coordinates: the question's characters are ``0..Lq``, the answer's are
``Lq..Lq+La``; template text before the question maps to 0 and template text between the
question and the answer maps to ``Lq``. A peer token ending at ``c`` has seen exactly the content
``[0, c)``, so a primary token ending at ``e >= c`` may read it without seeing the future.

Example::

    >>> content_end(3, (5, 10), 20)      # template text before the question
    0
    >>> content_end(8, (5, 10), 20)      # inside the question
    3
    >>> content_end(15, (5, 10), 20)     # template between question and answer
    5
"""

from __future__ import annotations

from dataclasses import dataclass

from workers.fusion.lm import LocalLM


@dataclass
class Encoded:
    """One model's ids for (prompt [+ continuation]) with the content end offset of every token."""

    ids: list[int]
    ends: list[int]
    n_prompt: int
    question_chars: int


def content_end(end: int, question: tuple[int, int], prompt_len: int) -> int:
    """Content coordinate of a prompt token whose text ends at char ``end`` of the prompt."""
    qs, qe = question
    if end <= qs:
        return 0
    if end <= qe:
        return end - qs
    return qe - qs


def encode_prompt(lm: LocalLM, system: str | None, question: str) -> Encoded:
    text, span = lm.render(system, question)
    ids, offsets = lm.encode_offsets(text, prompt=True)
    ends = [content_end(e, span, len(text)) for _, e in offsets]
    return Encoded(ids=ids, ends=ends, n_prompt=len(ids), question_chars=span[1] - span[0])


def continuation_ends(lm: LocalLM, text: str, question_chars: int, shift: int = 0) -> tuple[list[int], list[int]]:
    """Ids of continuation ``text`` (encoded apart from the prompt) and their content end offsets;
    ``shift`` is how many characters this model's copy has more than the shared text (its lead)."""
    ids, offsets = lm.encode_offsets(text)
    return ids, [question_chars + max(0, e - shift) for _, e in offsets]


def encode_pair(lm: LocalLM, system: str | None, question: str, continuation: str) -> Encoded:
    """Prompt and continuation, each tokenized on its own (as in decoding), concatenated."""
    p = encode_prompt(lm, system, question)
    c_ids, c_ends = continuation_ends(lm, lm.answer_lead + continuation, p.question_chars, len(lm.answer_lead))
    return Encoded(ids=p.ids + c_ids, ends=p.ends + c_ends, n_prompt=p.n_prompt, question_chars=p.question_chars)
