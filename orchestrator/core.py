"""The core contracts every part of expertmix shares.

Routers, aggregators, skills, workers and the faces (CLI, SDK, gateway) import this module; it
imports none of them. It holds:

- the port value types that travel along pipeline edges: ``questions`` (:class:`Question`),
  ``decisions`` (:class:`RoutingDecision`), ``answers`` (lists of :class:`ExpertAnswer`) and
  ``final`` (:class:`Aggregated`);
- what crosses process boundaries: :class:`GenerationRequest`, :class:`Completion`,
  :class:`Result` and its :class:`Trace` (pydantic models with JSON-able fields, so they travel
  unchanged through Celery and HTTP);
- :class:`Budget`, the :class:`Dispatcher` protocol and the :class:`Node` base;
- the plug-in registries (:data:`NODE_TYPES`, :data:`ROUTERS`, :data:`AGGREGATORS`,
  :data:`BACKENDS`), filled through the ``expertmix.*`` entry point groups, built-ins included.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol, runtime_checkable

from pydantic import BaseModel, Field, model_validator

from orchestrator.errors import InputError
from orchestrator.registry import Registry

if TYPE_CHECKING:
    from orchestrator.context import RunContext

class Question(BaseModel):
    """One question of a run. ``id`` is stable across resumes and redeliveries."""

    id: str
    text: str

    @classmethod
    def make(cls, text: str, id: str | None = None) -> "Question":
        """Validate ``text`` and build a question (``id`` defaults to ``q0``)."""
        return cls(id=id or "q0", text=check_question(text, where=id or "question"))


def check_question(text: Any, *, where: str = "question") -> str:
    """Reject empty and non-string questions with a message that says what to fix.

    Any length is accepted: routers read a bounded window of a prompt, and each model's context
    window is checked when its request is built (:func:`orchestrator.prompts.build_request`).
    """
    if not isinstance(text, str):
        raise InputError(f"{where}: the question must be a string, got {type(text).__name__}")
    stripped = text.strip()
    if not stripped:
        raise InputError(f"{where}: the question is empty", hint="pass a non-empty question text")
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


# ---- routing ---------------------------------------------------------------------------------
class Budget(BaseModel):
    """Caps a request may put on a run: how many experts, how much total relative cost, and how
    many tokens each expert may generate (it only lowers an expert's own ``max_tokens``)."""

    max_experts: int | None = Field(default=None, ge=1)
    max_cost: float | None = Field(default=None, gt=0)
    max_tokens: int | None = Field(default=None, ge=1)

    model_config = {"extra": "forbid"}


class RoutingDecision(BaseModel):
    """Which experts answer one question, and why (the ``decisions`` port value)."""

    question_id: str
    experts: list[ExpertChoice]
    router: str
    skills: list[str] = Field(default_factory=list)
    category: str | None = None
    confidence: float | None = None
    notes: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _non_empty(self) -> "RoutingDecision":
        if not self.experts:
            raise ValueError(f"routing decision for {self.question_id!r} has no experts")
        return self

    @property
    def names(self) -> list[str]:
        return [e.name for e in self.experts]


# ---- aggregation -----------------------------------------------------------------------------
class AggregationItem(BaseModel):
    """One question and its experts' answers, as an aggregator receives them."""

    question: Question
    answers: list[ExpertAnswer]


class Aggregated(BaseModel):
    """One fused answer (the ``final`` port value)."""

    answer: str
    aggregator: str
    model: str | None = None
    notes: list[str] = Field(default_factory=list)


# ---- dispatch --------------------------------------------------------------------------------
@runtime_checkable
class Dispatcher(Protocol):
    """Runs grouped generation requests; one batch per model.

    ``run_batches`` takes ``{model: [requests]}`` and returns completions keyed by request key.
    Implementations: ``workers.dispatch.LocalDispatcher`` (in-process pool) and
    ``workers.celery_dispatch.CeleryDispatcher`` (the worker fleet).
    """

    def run_batches(
        self, groups: dict[str, list[GenerationRequest]], *, label: str = "experts", progress: bool = False
    ) -> dict[str, Completion]: ...

    def model_loads(self) -> dict[str, int]: ...

    def close(self) -> None: ...


def group_by_model(requests: list[GenerationRequest]) -> dict[str, list[GenerationRequest]]:
    """Group requests per model, keeping first-seen model order and request order."""
    groups: dict[str, list[GenerationRequest]] = {}
    for req in requests:
        groups.setdefault(req.model, []).append(req)
    return groups


# ---- pipeline nodes ---------------------------------------------------------------------------
class Node:
    """Base of pipeline node types: declare typed ``inputs``/``outputs``; implement ``run``.

    Every node works on a whole run at once: each port carries one value per question, in
    question order. Port types: ``questions``, ``decisions``, ``answers``, ``final``.
    """

    type_name: ClassVar[str] = ""
    inputs: ClassVar[dict[str, str]] = {}
    outputs: ClassVar[dict[str, str]] = {}

    def __init__(self, name: str) -> None:
        self.name = name

    def warm_up(self, ctx: "RunContext") -> None:
        """Load anything heavy (embedding models, classifiers). Engines load lazily in the pool."""

    def run(self, ctx: "RunContext", **inputs: list[Any]) -> dict[str, list[Any]]:
        raise NotImplementedError


# ---- plug-in registries (filled through entry points; built-ins use the same groups) ---------
NODE_TYPES: Registry[type] = Registry("node type", "expertmix.nodes")
ROUTERS: Registry[type] = Registry("router", "expertmix.routers")
AGGREGATORS: Registry[type] = Registry("aggregator", "expertmix.aggregators")
BACKENDS: Registry[type] = Registry("backend", "expertmix.backends")


def make_router(name: str, **params: Any) -> Any:
    """Instantiate a registered router by name (``skill``, ``category``, ... or a plug-in)."""
    return ROUTERS.get(name, where="router")(**params)


def make_aggregator(name: str, **params: Any) -> Any:
    """Instantiate a registered aggregator by name (``synthesis``, ``vote``, ... or a plug-in)."""
    return AGGREGATORS.get(name, where="aggregator")(**params)
