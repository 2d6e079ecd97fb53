"""Data that crosses component boundaries: requests to backends, expert answers, results.

All are pydantic models with JSON-able fields so they travel unchanged through Celery and HTTP.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field

from orchestrator.errors import InputError

# Keeps question + system prompt + k answers inside the small models' 2048-token context.
MAX_QUESTION_CHARS = 4_000


class Question(BaseModel):
    """One question of a run. ``id`` is stable across resumes and redeliveries."""

    id: str
    text: str

    @classmethod
    def make(cls, text: str, id: str | None = None) -> "Question":
        """Validate ``text`` and build a question (``id`` defaults to ``q0``)."""
        return cls(id=id or "q0", text=check_question(text, where=id or "question"))


def check_question(text: Any, *, where: str = "question") -> str:
    """Reject empty, non-string and oversized questions with a message that says what to fix."""
    if not isinstance(text, str):
        raise InputError(f"{where}: the question must be a string, got {type(text).__name__}")
    stripped = text.strip()
    if not stripped:
        raise InputError(f"{where}: the question is empty", hint="pass a non-empty question text")
    if len(stripped) > MAX_QUESTION_CHARS:
        raise InputError(
            f"{where}: the question has {len(stripped)} characters, more than {MAX_QUESTION_CHARS}",
            hint="shorten it or split it into several questions",
        )
    return stripped


class Sampling(BaseModel):
    """Sampling settings for one generation call."""

    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 128
    seed: int | None = 0
    stop: list[str] = Field(default_factory=list)
    n: int = 1


class GenerationRequest(BaseModel):
    """One prompt for one model. ``messages`` for chat models, ``prompt`` for base models.

    ``key`` identifies the answer (run/question/expert/...) so a redelivered batch never
    duplicates it; backends copy it to the completion unchanged.
    """

    key: str
    model: str
    messages: list[dict[str, str]] | None = None
    prompt: str | None = None
    sampling: Sampling = Field(default_factory=Sampling)


class Completion(BaseModel):
    """What a backend returns for one request (``texts`` holds ``n`` samples, ``text`` the first)."""

    key: str
    model: str
    text: str
    texts: list[str] = Field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    latency_s: float = 0.0
    finish_reason: str | None = None


class ExpertAnswer(BaseModel):
    """One expert's answer to one question."""

    expert: str
    model: str
    text: str
    score: float = 0.0
    completion_tokens: int = 0


class ExpertChoice(BaseModel):
    """An expert the router picked, with its score."""

    name: str
    score: float


class NodeTiming(BaseModel):
    node: str
    type: str
    seconds: float


class Trace(BaseModel):
    """How an answer was made: routing, experts, aggregator, timings, model loads."""

    pipeline: str
    router: str | None = None
    skills: list[str] = Field(default_factory=list)
    category: str | None = None
    confidence: float | None = None
    aggregator: str | None = None
    aggregator_model: str | None = None
    timings: list[NodeTiming] = Field(default_factory=list)
    model_loads: dict[str, int] = Field(default_factory=dict)
    answers: list[ExpertAnswer] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)


class Result(BaseModel):
    """The answer to one question: what the CLI prints with ``--json`` and the SDK returns."""

    id: str
    question: str
    answer: str
    experts: list[ExpertChoice]
    aggregator: str | None
    model_loads: int
    trace: Trace
    status: Literal["ok", "error"] = "ok"
    error: str | None = None
