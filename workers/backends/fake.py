"""``FakeBackend``: a scripted backend for unit tests only (registered as backend ``fake``).

It answers from a dict (prompt text -> answer) or a callable, and records every ``load``,
``unload`` and ``generate`` call so tests can assert what the pool and dispatcher did.

Example::

    >>> from orchestrator.config import ModelSpec
    >>> from orchestrator.core import GenerationRequest
    >>> fake = FakeBackend(ModelSpec(name="m", backend="fake", path="m"), answers={"hi": "hello"})
    >>> fake.load()
    >>> fake.generate([GenerationRequest(key="k", model="m", prompt="hi")])[0].text
    'hello'
"""

from __future__ import annotations

import re
import threading
import time
from typing import Callable, Mapping

from orchestrator.config import ModelSpec
from orchestrator.errors import BackendError
from orchestrator.core import CANCELLED, Completion, GenerationRequest
from workers.backends.base import BACKENDS, with_scoring
from workers.backends.prompting import completion_text, conversation

Answer = Callable[[GenerationRequest, int], str]


@BACKENDS.register("fake")
class FakeBackend:
    """Scripted answers; records calls. Unknown prompts echo ``"<model>: <last user text>"``.

    ``answers`` maps the request's text (its prompt, or its last message's content) to an answer,
    or is a callable ``(request, sample_index) -> str``. ``delay_s`` sleeps in each ``generate``
    (to test concurrency); ``token_delay_s`` paces :meth:`generate_stream`; ``fail_on`` makes ``generate`` raise for requests whose text contains it;
    ``scores(prompt, continuation)`` answers scoring requests (default: minus the continuation's length).
    """

    can_score = True

    def __init__(
        self,
        spec: ModelSpec,
        answers: Mapping[str, str] | Answer | None = None,
        *,
        delay_s: float = 0.0,
        fail_on: str | None = None,
        token_delay_s: float = 0.0,
        scores: Callable[[str, str], float] | None = None,
    ) -> None:
        self.spec = spec
        # scoring requests: ``scores(prompt, continuation)``; default minus the continuation's length
        self.scores = scores or (lambda prompt, continuation: -float(len(continuation)))
        self.answers = answers if answers is not None else {}
        self.delay_s = delay_s
        self.fail_on = fail_on
        self.token_delay_s = token_delay_s
        self.loaded = False
        self.calls: list[tuple[str, int]] = []  # ("load" | "unload" | "generate", batch size)
        self.batches: list[list[GenerationRequest]] = []
        self._active = 0
        self.max_concurrent = 0
        self._lock = threading.Lock()

    def load(self) -> None:
        self.calls.append(("load", 0))
        self.loaded = True

    def unload(self) -> None:
        self.calls.append(("unload", 0))
        self.loaded = False

    def generate(self, requests: list[GenerationRequest]) -> list[Completion]:
        """Answers in request order; raises :class:`BackendError` when not loaded."""
        if not self.loaded:
            raise BackendError(f"model {self.spec.name!r} is not loaded", hint="call load() before generate()")
        with self._lock:
            self._active += 1
            self.max_concurrent = max(self.max_concurrent, self._active)
        try:
            self.calls.append(("generate", len(requests)))
            self.batches.append(list(requests))
            if self.delay_s:
                time.sleep(self.delay_s)
            return with_scoring(requests, lambda gen: [self._complete(r) for r in gen],
                                lambda pairs: [self.scores(p, c) for p, c in pairs], self.spec.name)
        finally:
            with self._lock:
                self._active -= 1

    def generate_stream(self, requests: list[GenerationRequest], on_delta: Callable[[str, str], bool]) -> list[Completion]:
        """:meth:`generate`, then each answer reported word by word (``token_delay_s`` between words);
        an answer whose ``on_delta`` returns False stops there (``finish_reason="cancelled"``)."""
        out = []
        for comp in self.generate(requests):
            sent = ""
            for piece in re.findall(r"\s*\S+", comp.text):
                if self.token_delay_s:
                    time.sleep(self.token_delay_s)
                sent += piece
                if on_delta(comp.key, piece) is False:
                    comp = comp.model_copy(update={"text": sent, "texts": [sent], "finish_reason": CANCELLED})
                    break
            out.append(comp)
        return out

    def count(self, kind: str) -> int:
        """How many times ``load`` / ``unload`` / ``generate`` was called."""
        return sum(1 for name, _ in self.calls if name == kind)

    def _complete(self, request: GenerationRequest) -> Completion:
        text = _request_text(request, self.spec.chat)
        if self.fail_on and self.fail_on in text:
            raise BackendError(f"FakeBackend scripted failure on {request.key!r}", transient=True)
        texts = [self._answer(request, text, i) for i in range(request.sampling.n)]
        return Completion(
            key=request.key,
            model=self.spec.name,
            text=texts[0] if texts else "",
            texts=texts,
            prompt_tokens=len(text.split()),
            completion_tokens=sum(min(len(t.split()), request.sampling.max_tokens) for t in texts),
            latency_s=self.delay_s,
            finish_reason="stop",
        )

    def _answer(self, request: GenerationRequest, text: str, index: int) -> str:
        if callable(self.answers):
            return self.answers(request, index)
        if text in self.answers:
            return self.answers[text]
        last = request.messages[-1]["content"] if request.messages else text
        return f"{self.spec.name}: {last}"


def _request_text(request: GenerationRequest, chat: bool) -> str:
    if chat:
        return conversation(request)[-1]["content"]
    return completion_text(request)
