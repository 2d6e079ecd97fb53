"""Token streaming through a run: the final answer's text as the model generates it.

A caller that wants tokens sets ``RunContext.stream`` to a :class:`TokenStream`. The executor asks
:func:`stream_plan` which nodes make the final answer's text and, while one of them runs, hands it
:func:`streaming_dispatcher` instead of the run's dispatcher. Which nodes those are:

- the nodes feeding the output whose aggregator declares ``streams_answer = True`` (the
  ``synthesis`` aggregator: its generated text is the answer);
- when such an aggregator also declares ``passes_single_answer = True`` (synthesis with
  ``pass_single``: a question with one distinct answer keeps it), the experts nodes feeding it:
  a question routed to ONE expert streams that expert's tokens.

Within a streamed node's call, only questions with exactly one request stream (several requests
for one question cannot all be its answer). Non-generating aggregators (``vote``) stream nothing:
the caller sends their answer when the run ends, which is when it is decided. A stream may also
have ``routed(decision)``: the executor calls it (:func:`announce`) as soon as a router decided.

Updates are CUMULATIVE (the answer text so far), so a node that is retried and regenerates the
same greedy text sends nothing twice. A stream's ``cancelled(question_id)`` lets a client that
hung up stop the work only its question needed: its pending requests are skipped (empty
completions, ``finish_reason="cancelled"``) and a streaming backend aborts its running ones.

Example::

    class Printer:
        def update(self, question_id, text): print(question_id, text)
        def cancelled(self, question_id): return False

    orch.run(["What is 6 * 7?"], stream=Printer())
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any, Callable, Protocol, runtime_checkable

from orchestrator.core import Completion, GenerationRequest, RoutingDecision

if TYPE_CHECKING:
    from orchestrator.context import RunContext

log = logging.getLogger(__name__)

# A backend's per-token callback: (request key, text delta) -> False to stop that request. An
# empty delta only asks whether the request is still wanted (the fleet's dispatcher probes its
# queued requests that way); backends never send one.
DeltaCallback = Callable[[str, str], bool]


@runtime_checkable
class TokenStream(Protocol):
    """Receives a run's final-answer text as it grows, per question."""

    def update(self, question_id: str, text: str) -> None:
        """``text`` is the whole answer so far (never a delta)."""
        ...

    def cancelled(self, question_id: str) -> bool:
        """True once nobody waits for this question's answer any more."""
        ...


class RunStreams:
    """One merged run, many requests: routes each question's updates to its own stream.

    >>> class Keep:
    ...     def __init__(self): self.text = ""
    ...     def update(self, qid, text): self.text = text
    ...     def cancelled(self, qid): return False
    >>> a = Keep(); hub = RunStreams({"q1": a})
    >>> hub.update("q1", "Hel"); hub.update("q2", "ignored"); a.text
    'Hel'
    """

    def __init__(self, streams: Mapping[str, TokenStream]) -> None:
        self.streams = dict(streams)

    @property
    def question_ids(self) -> list[str]:
        return list(self.streams)

    def update(self, question_id: str, text: str) -> None:
        stream = self.streams.get(question_id)
        if stream is not None:
            stream.update(question_id, text)

    def cancelled(self, question_id: str) -> bool:
        stream = self.streams.get(question_id)
        return stream is not None and stream.cancelled(question_id)

    def routed(self, decision: RoutingDecision) -> None:
        routed = getattr(self.streams.get(decision.question_id), "routed", None)
        if routed is not None:
            routed(decision)


def announce(ctx: "RunContext", outputs: Mapping[str, list[Any]]) -> None:
    """After a node ran: its routing decisions go to the stream's optional ``routed(decision)``
    hook, so a caller can show them before the answer exists (the gateway's first chunk)."""
    routed = getattr(getattr(ctx, "stream", None), "routed", None)
    if routed is None:
        return
    for decision in outputs.get("decisions", []):
        if isinstance(decision, RoutingDecision):
            routed(decision)


def stream_plan(pipeline: Any, nodes: Mapping[str, Any] | None = None) -> frozenset[str]:
    """Names of the nodes whose generated text becomes the final answer (see the module doc).

    ``pipeline`` is a compiled pipeline (``nodes``, ``wiring``, ``output_node``) or a
    :class:`~orchestrator.pipeline.Pipeline` with its instantiated ``nodes``.
    """
    nodes = nodes if nodes is not None else pipeline.nodes
    plan: set[str] = set()
    for final in _sources(pipeline, _output_node(pipeline), "final"):
        merge_rule = getattr(nodes[final], "aggregator", nodes[final])
        if not getattr(merge_rule, "streams_answer", False):
            continue
        plan.add(final)
        if getattr(merge_rule, "passes_single_answer", False):
            plan.update(src for src in _sources(pipeline, final, "answers")
                        if getattr(nodes[src], "type_name", "") == "experts")
    return frozenset(plan)


def streaming_dispatcher(ctx: "RunContext", dispatcher: Any, node: str, plan: frozenset[str]) -> Any:
    """``dispatcher`` itself, or a :class:`StreamingDispatcher` when ``node`` streams in this run."""
    stream = getattr(ctx, "stream", None)
    if stream is None or node not in plan:
        return dispatcher
    return StreamingDispatcher(dispatcher, stream, ctx.run_id)


def with_stream(ctx: "RunContext", node: str, plan: frozenset[str]) -> "RunContext":
    """A copy of ``ctx`` whose dispatcher streams, when ``node`` is in ``plan`` (else ``ctx``)."""
    dispatcher = streaming_dispatcher(ctx, ctx.dispatcher, node, plan)
    return ctx if dispatcher is ctx.dispatcher else replace(ctx, dispatcher=dispatcher)


class StreamingDispatcher:
    """Wraps a run's dispatcher while a streamed node runs (see the module doc).

    Dispatchers that can stream declare ``streams = True`` and take ``on_delta``; with any other
    dispatcher the answer is sent whole when its batch is done.
    """

    def __init__(self, inner: Any, stream: TokenStream, run_id: str) -> None:
        self.inner, self.stream, self.run_id = inner, stream, run_id
        self._lock = threading.Lock()  # backends call on_delta from their own threads

    def run_batches(self, groups: dict[str, list[GenerationRequest]], *, label: str = "experts",
                    progress: bool = False) -> dict[str, Completion]:
        question_of = {r.key: self._question(r.key) for reqs in groups.values() for r in reqs}
        skipped = {r.key: Completion.cancelled_for(r.key, m)
                   for m, reqs in groups.items() for r in reqs
                   if question_of[r.key] is not None and self.stream.cancelled(question_of[r.key])}
        live = {m: [r for r in reqs if r.key not in skipped] for m, reqs in groups.items()}
        live = {m: reqs for m, reqs in live.items() if reqs}
        per_question = Counter(q for k, q in question_of.items() if q is not None and k not in skipped)
        streamed = {k: q for k, q in question_of.items() if q is not None and k not in skipped and per_question[q] == 1}
        texts = dict.fromkeys(streamed, "")

        def on_delta(key: str, delta: str) -> bool:
            question = streamed.get(key)
            if question is None:
                return True
            if self.stream.cancelled(question):
                return False
            if not delta:  # a probe: nothing to show
                return True
            with self._lock:
                texts[key] += delta
                self.stream.update(question, texts[key])
            return True

        if getattr(self.inner, "streams", False) and streamed:
            done = self.inner.run_batches(live, label=label, progress=progress, on_delta=on_delta)
        else:
            done = self.inner.run_batches(live, label=label, progress=progress) if live else {}
        for key, question in streamed.items():  # the whole text, also where deltas were not streamed
            if key in done and not done[key].cancelled:
                self.stream.update(question, done[key].text)
        return {**done, **skipped}

    def _question(self, key: str) -> str | None:
        ids = getattr(self.stream, "question_ids", None)
        prefix = f"{self.run_id}/"
        if not key.startswith(prefix):
            return None
        rest = key[len(prefix):]
        if ids is None:  # a single-question stream: the question id is the key's next part
            return rest.split("/", 1)[0]
        return next((q for q in ids if rest.startswith(f"{q}/")), None)

    def model_loads(self) -> dict[str, int]:
        return self.inner.model_loads()

    def close(self) -> None:
        self.inner.close()

    def __getattr__(self, attr: str) -> Any:
        return getattr(self.inner, attr)


def _output_node(pipeline: Any) -> str:
    if hasattr(pipeline, "output_node"):
        return pipeline.output_node
    return pipeline.nodes_of_type("output")[0]


def _sources(pipeline: Any, node: str, port: str) -> list[str]:
    """The nodes feeding ``node.port`` (compiled ``wiring`` or a Pipeline's ``in_edges``)."""
    wiring = getattr(pipeline, "wiring", None)
    if wiring is not None:
        return [src for src, _ in wiring[node].get(port, [])]
    return [src for src, _sport, dport in pipeline.in_edges(node) if dport == port]
