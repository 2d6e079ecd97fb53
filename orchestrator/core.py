"""The core contracts every part of expertmix shares.

Routers, aggregators, skills, workers and the faces (CLI, SDK, gateway) import this module; it
imports none of them. It holds:

- the port value types that travel along pipeline edges: ``questions`` (:class:`Question`),
  ``decisions`` (:class:`RoutingDecision`), ``answers`` (lists of :class:`ExpertAnswer`) and
  ``final`` (:class:`Aggregated`), with the annotations nodes declare their ports with
  (:data:`Questions`, :data:`Answers`, ..., :class:`PortType`) and :class:`Selected` for branches;
- what crosses process boundaries: :class:`GenerationRequest`, :class:`Completion`,
  :class:`Result` and its :class:`Trace` of :class:`TraceStep` (pydantic models with JSON-able fields, so they travel
  unchanged through Celery and HTTP);
- :class:`Budget`, the :class:`Dispatcher` protocol and the :class:`Node` base;
- the plug-in registries (:data:`NODE_TYPES`, :data:`ROUTERS`, :data:`AGGREGATORS`,
  :data:`BACKENDS`), filled through the ``expertmix.*`` entry point groups, built-ins included.
"""

from __future__ import annotations

import inspect
import re
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, ClassVar, Literal, Protocol, get_args, runtime_checkable

from pydantic import BaseModel, Field, model_validator

from orchestrator.errors import InputError
from orchestrator.registry import Registry

if TYPE_CHECKING:
    from orchestrator.context import RunContext

# What no tokenizer takes: a lone UTF-16 surrogate (not encodable as UTF-8) and NUL.
_UNTOKENIZABLE = re.compile("[\ud800-\udfff\x00]")


class Question(BaseModel):
    """One question of a run. ``id`` is stable across resumes and redeliveries.

    ``context`` is the conversation before the question (a chat request's system messages and
    earlier turns, oldest first, as ``{"role", "content"}`` with role system, user or assistant):
    experts receive it, cut from the oldest turn to fit each model's context window
    (:func:`orchestrator.prompts.build_request`); routers read :meth:`routing_text`.
    """

    id: str
    text: str
    context: list[dict[str, str]] = Field(default_factory=list)

    def routing_text(self) -> str:
        """What a router reads: the question first, then the earlier user turns (latest first)
        as context, so a follow-up like "and in Celsius?" routes with its topic."""
        earlier = [t["content"] for t in reversed(self.context) if t.get("role") == "user"]
        return "\n\n".join([self.text, *earlier])

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
    bad = _UNTOKENIZABLE.search(stripped)
    if bad:
        kind = "a NUL character" if bad.group() == "\x00" else f"a lone UTF-16 surrogate (U+{ord(bad.group()):04X})"
        raise InputError(f"{where}: the question contains {kind} at character {bad.start() + 1}, which no model can read",
                         hint="remove it, or send valid UTF-8 text (surrogates come in pairs)")
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
    # Scoring instead of generating: each continuation's summed log-probability after ``prompt``
    # (raw text, no chat template) comes back in ``Completion.scores``. Local engines only.
    continuations: list[str] | None = None


CANCELLED = "cancelled"  # finish_reason of a request stopped because its client hung up
SCORED = "scored"  # finish_reason of a scoring request's completion (``continuations``)


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
    scores: list[float] = Field(default_factory=list)  # a scoring request's log-probabilities

    @classmethod
    def cancelled_for(cls, key: str, model: str) -> "Completion":
        """The empty answer a request gets when nobody wants it any more (its client hung up)."""
        return cls(key=key, model=model, text="", finish_reason=CANCELLED)

    @property
    def cancelled(self) -> bool:
        return self.finish_reason == CANCELLED


class ExpertAnswer(BaseModel):
    """One expert's answer to one question."""

    expert: str
    model: str
    text: str
    score: float = 0.0
    completion_tokens: int = 0
    finish_reason: str | None = None  # the backend's: "length" when cut at max_tokens


class ExpertChoice(BaseModel):
    """An expert the router picked, with its score."""

    name: str
    score: float


class NodeTiming(BaseModel):
    node: str
    type: str
    seconds: float


class TraceStep(BaseModel):
    """One node's work on one question (or sub-question): what the node recorded (``part``),
    plus what the executor measured: wall time of the node's run (shared by its ``batch`` of
    questions), attempts, status and this question's prompt and completion tokens at the node."""

    node: str
    type: str
    question: str
    level: int = 1  # 1: the question itself; 2: one of its sub-questions
    seconds: float = 0.0
    batch: int = 1
    attempts: int = 1
    status: Literal["ok", "error"] = "ok"
    error: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    part: dict[str, Any] = Field(default_factory=dict)


class Trace(BaseModel):
    """How an answer was made: the steps on the path that produced it, and a summary of them
    (routing, experts, aggregator, timings, tokens, model loads)."""

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
    steps: list[TraceStep] = Field(default_factory=list)
    prompt_tokens: int = 0
    completion_tokens: int = 0


class Result(BaseModel):
    """The answer to one question: what the CLI prints with ``--json`` and the SDK returns.

    ``status: error`` (with ``error``, one line naming the node) when this question failed; the
    other questions of the run are unaffected.
    """

    id: str
    question: str
    answer: str
    experts: list[ExpertChoice]
    aggregator: str | None
    model_loads: int
    trace: Trace
    status: Literal["ok", "error"] = "ok"
    error: str | None = None
    error_type: str | None = None  # the error's code, e.g. input_error (the gateway answers 400)
    finish_reason: str | None = None  # of the call whose text is the answer (Aggregated.finish_reason)


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
    """One fused answer (the ``final`` port value).

    ``finish_reason`` is that of the generating call whose text the answer is (the aggregator's
    own call, or the expert answer passed through): ``"length"`` when it stopped at
    ``max_tokens``; None when no call's text is the answer as such (an extracted vote value).
    """

    answer: str
    aggregator: str
    model: str | None = None
    confidence: float | None = None  # e.g. the share of answers that agree with a vote's winner
    notes: list[str] = Field(default_factory=list)
    finish_reason: str | None = None


# ---- ports: what travels along an edge, declared once ------------------------------------------
@dataclass(frozen=True)
class PortType:
    """The type of a port: a value type name, and how its rows map.

    ``children`` on an output: each question becomes several sub-questions (rows one level
    deeper); on an input: the sub-question values arrive grouped, one list per question.
    ``merge`` on an input: several edges may feed it, one per branch; a question arrives on at most
    one of them (branches joining again, in question order).
    """

    name: str
    children: bool = False
    merge: bool = False

    @property
    def label(self) -> str:
        return f"{self.name}[]" if self.children else self.name


# A node's inputs come from its ``run`` keyword parameters annotated with these (a default makes
# the input optional); its outputs from the ``outputs`` class attribute. Nothing is declared twice.
Questions = Annotated[list[Question], PortType("questions")]
Decisions = Annotated[list[RoutingDecision], PortType("decisions")]
Answers = Annotated[list[list[ExpertAnswer]], PortType("answers")]
Finals = Annotated[list[Aggregated], PortType("final")]
SubQuestions = Annotated[list[list[Question]], PortType("questions", children=True)]
SubAnswers = Annotated[list[list[list[ExpertAnswer]]], PortType("answers", children=True)]
MergedFinals = Annotated[list[Aggregated], PortType("final", merge=True)]


@dataclass
class Selected:
    """A node output for only some of the node's questions: question ``i`` continues on this
    port when ``keep[i]`` (a branch). Questions not kept simply do not reach the nodes fed by it.

    Example::

        >>> out = Selected(values=["a", "b"], keep=[True, False])   # only the first goes on
    """

    values: list[Any]
    keep: list[bool]


_PORTS: dict[type, tuple[dict[str, PortType], dict[str, PortType], frozenset[str]]] = {}


def node_ports(cls: type) -> tuple[dict[str, PortType], dict[str, PortType], frozenset[str]]:
    """``(inputs, outputs, optional input names)`` of a node class, read once and cached.

    Inputs are the keyword-only parameters of ``run`` (annotated ``Questions``, ``Answers``, ...;
    a default makes one optional), or an explicit ``inputs`` mapping for a ``run(**inputs)``.
    """
    if cls not in _PORTS:
        declared = next((c.__dict__["inputs"] for c in cls.__mro__ if c.__dict__.get("inputs") is not None), None)
        if declared is not None:
            inputs, optional = {p: port_type(t, where=f"{cls.__name__}.inputs[{p!r}]") for p, t in declared.items()}, frozenset()
        else:
            inputs, optional = _run_ports(cls)
        outputs = {p: port_type(t, where=f"{cls.__name__}.outputs[{p!r}]") for p, t in (cls.outputs or {}).items()}
        _PORTS[cls] = (inputs, outputs, optional)
    return _PORTS[cls]


def port_type(annotation: Any, *, where: str) -> PortType:
    """The :class:`PortType` inside ``annotation`` (a port alias, ``alias | None``, a name)."""
    if isinstance(annotation, PortType):
        return annotation
    if isinstance(annotation, str):
        return PortType(annotation)
    for meta in getattr(annotation, "__metadata__", ()):
        if isinstance(meta, PortType):
            return meta
    for arg in get_args(annotation):
        if arg is not type(None):
            try:
                return port_type(arg, where=where)
            except TypeError:
                continue
    raise TypeError(f"{where}: {annotation!r} is not a port type; annotate with Questions, Decisions, "
                    "Answers, Finals, SubQuestions, SubAnswers or MergedFinals from orchestrator.core")


def _run_ports(cls: type) -> tuple[dict[str, PortType], frozenset[str]]:
    namespace = vars(sys.modules[cls.run.__module__])
    inputs, optional = {}, set()
    for p in inspect.signature(cls.run).parameters.values():
        if p.kind is not inspect.Parameter.KEYWORD_ONLY:
            continue
        ann = eval(p.annotation, namespace) if isinstance(p.annotation, str) else p.annotation  # noqa: S307 (own source)
        inputs[p.name] = port_type(ann, where=f"{cls.__name__}.run parameter {p.name!r}")
        if p.default is not inspect.Parameter.empty:
            optional.add(p.name)
    return inputs, frozenset(optional)


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
    """Base of pipeline node types: annotate ``run``'s keyword inputs, declare ``outputs``.

    A node works on a whole sub-batch at once: each input holds one value per question it was
    given, in order, and ``run`` returns ``{port: one value per question}`` (or a
    :class:`Selected` to send only some questions on). It records its part of each question's
    trace with ``ctx.record(question.id, ...)``. Example::

        class Shout(Node):
            type_name = "shout"
            outputs = {"final": Finals}

            def run(self, ctx, *, questions: Questions, answers: Answers) -> dict[str, list]:
                finals = [Aggregated(answer=a[0].text.upper(), aggregator="shout") for a in answers]
                return {"final": finals}
    """

    type_name: ClassVar[str] = ""
    inputs: ClassVar[dict[str, Any] | None] = None  # only for a run(**inputs); else read from run
    outputs: ClassVar[dict[str, Any]] = {}

    def __init__(self, name: str) -> None:
        self.name = name

    @classmethod
    def ports(cls) -> tuple[dict[str, PortType], dict[str, PortType], frozenset[str]]:
        """``(inputs, outputs, optional inputs)``: see :func:`node_ports`."""
        return node_ports(cls)

    def warm_up(self, ctx: "RunContext") -> None:
        """Load anything heavy (embedding models, classifiers). Engines load lazily in the pool."""

    def run(self, ctx: "RunContext", **inputs: list[Any]) -> dict[str, Any]:
        raise NotImplementedError


# ---- plug-in registries (filled through entry points; built-ins use the same groups) ---------
NODE_TYPES: Registry[type] = Registry("node type", "expertmix.nodes")
ROUTERS: Registry[type] = Registry("router", "expertmix.routers")
AGGREGATORS: Registry[type] = Registry("aggregator", "expertmix.aggregators")
BACKENDS: Registry[type] = Registry("backend", "expertmix.backends")


def can_score(backend: str, *, where: str = "") -> bool:
    """Whether the backend named ``backend`` scores continuations (its class sets ``can_score``)."""
    return bool(getattr(BACKENDS.get(backend, where=where), "can_score", False))


def make_router(name: str, **params: Any) -> Any:
    """Instantiate a registered router by name (``skill``, ``category``, ... or a plug-in)."""
    return ROUTERS.get(name, where="router")(**params)


def make_aggregator(name: str, **params: Any) -> Any:
    """Instantiate a registered aggregator by name (``synthesis``, ``vote``, ... or a plug-in)."""
    return AGGREGATORS.get(name, where="aggregator")(**params)
