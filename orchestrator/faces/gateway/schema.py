"""The wire format: OpenAI chat-completion requests in, ``chat.completion`` objects out.

Every message's text is checked before anything is queued, with the same check as every question
(:func:`orchestrator.core.check_question`: a lone UTF-16 surrogate or a NUL is something no
tokenizer takes), so it is a 400 naming the message and position, never a failure inside a batch
shared with other requests.
"""

from __future__ import annotations

import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from orchestrator.core import Budget, Result, check_question
from orchestrator.errors import InputError
from orchestrator.faces.overrides import SamplingOverride

DEFAULT_MODEL_ALIAS = "expertmix"  # the `model` value that means "this gateway's default pipeline"
MAX_MODEL_CHARS = 256
MAX_CHOICES = 8  # `n` at most
EXPERT_PREFIX = "expert/"  # `model: expert/NAME` asks one expert directly, no routing


class ChatMessage(BaseModel):
    """One chat message; ``content`` is a string or OpenAI content parts (text parts are used)."""

    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None

    def text(self) -> str:
        """The message's text (content parts of type ``text`` joined by newlines)."""
        return "\n".join(_texts(self.content))


def _texts(content: Any) -> list[str]:
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    return [str(p.get("text", "")) for p in content if p.get("type") == "text"]


class ChatCompletionRequest(BaseModel):
    """The OpenAI fields the gateway honours; fields it cannot honour are refused by
    :meth:`check_honourable` (a 400 naming the field), other unknown fields are ignored."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(default=DEFAULT_MODEL_ALIAS, max_length=MAX_MODEL_CHARS)
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int = Field(default=1, ge=1, le=MAX_CHOICES)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    expertmix_budget: Budget | None = None

    def check_honourable(self) -> None:
        """Refuse, naming the field, what the gateway would otherwise silently ignore."""
        extra = self.model_extra or {}
        for field, default in _UNHONOURED.items():
            value = extra.get(field)
            if value is not None and value != default and value not in ([], {}):
                raise field_error(field, f"`{field}` is not supported by the expertmix gateway",
                                   "remove it (expertmix answers with text only)")
        fmt = extra.get("response_format")
        if isinstance(fmt, dict) and fmt.get("type", "text") != "text":
            raise field_error("response_format", f"response_format type {fmt.get('type')!r} is not supported",
                               'remove it or use {"type": "text"}')
        stops = [self.stop] if isinstance(self.stop, str) else (self.stop or [])
        if len(stops) > 4 or any(not s for s in stops):
            raise field_error("stop", "`stop` takes at most 4 non-empty strings", "send 1-4 stop strings")

    def sampling(self) -> SamplingOverride | None:
        """The request's sampling settings for every model call of its run (None: the pipeline's own)."""
        caps = [c for c in (self.max_tokens, self.max_completion_tokens) if c is not None]
        stop = [self.stop] if isinstance(self.stop, str) else self.stop
        override = SamplingOverride(temperature=self.temperature, top_p=self.top_p, seed=self.seed, stop=stop,
                                    max_tokens=min(caps) if caps else None)
        return override if override.key() != "{}" else None


# OpenAI fields with no expertmix meaning; their default (or absence) is fine, anything else is a 400.
_UNHONOURED: dict[str, Any] = {"presence_penalty": 0, "frequency_penalty": 0, "logit_bias": None,
                               "logprobs": False, "top_logprobs": None, "tools": None, "functions": None,
                               "tool_choice": "none", "function_call": "none", "audio": None,
                               "prediction": None, "modalities": ["text"]}


def field_error(field: str, message: str, fix: str) -> InputError:
    exc = InputError(f"{field}: {message}", hint=fix)
    exc.param = field
    return exc


def check_messages(messages: list[ChatMessage]) -> None:
    """Every non-empty message must be text a model can read (400 naming ``messages.N.content``)."""
    for i, msg in enumerate(messages):
        text = msg.text()
        if text.strip():
            where = f"messages.{i}.content"
            try:
                check_question(text, where=where)
            except InputError as exc:
                exc.param = where
                raise


def last_user_message(messages: list[ChatMessage]) -> str:
    """The text of the last ``user`` message (the question)."""
    return conversation(messages)[0]


_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


def conversation(messages: list[ChatMessage]) -> tuple[str, list[dict[str, str]]]:
    """``(question, context)``: the last ``user`` message, and every message before it as
    ``{"role": system|user|assistant, "content"}`` (``developer`` counts as system; empty
    assistant turns are skipped). The conversation must end with that user message."""
    last = max((i for i, m in enumerate(messages) if m.role == "user"), default=None)
    if last is None:
        raise InputError("the request has no message with role 'user'",
                         hint='put the question in {"role": "user", "content": "..."}')
    if last != len(messages) - 1:
        raise field_error(f"messages.{last + 1}", f"the conversation must end with a user message, "
                           f"but message {last + 1} ({messages[last + 1].role}) follows the last one",
                           "end the messages with the user's question")
    context = []
    for i, msg in enumerate(messages[:last]):
        role = _ROLES.get(msg.role)
        if role is None:
            raise field_error(f"messages.{i}.role", f"role {msg.role!r} is not supported",
                               f"use one of: {', '.join(_ROLES)} (tool calls are not supported)")
        if msg.text().strip():
            context.append({"role": role, "content": msg.text()})
    return messages[last].text(), context


def usage_of(result: Result) -> dict[str, int]:
    """Prompt and completion tokens over every model call that made ``result`` (the trace's
    totals; ``trace.steps`` has them per node)."""
    prompt, completion = result.trace.prompt_tokens, result.trace.completion_tokens
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def finish_reason(result: Result) -> str:
    """OpenAI's ``finish_reason`` for an answer: ``"length"`` when the call whose text is the answer
    stopped at ``max_tokens`` (the backend said so), else ``"stop"``."""
    return "length" if result.finish_reason == "length" else "stop"


def chat_completion(results: Result | list[Result], *, request_id: str, model: str) -> dict[str, Any]:
    """A ``chat.completion`` object with one choice per result (``n``), the first one's trace
    under ``expertmix``, and usage summed over every model call of every choice."""
    results = results if isinstance(results, list) else [results]
    usages = [usage_of(r) for r in results]
    usage = {k: sum(u[k] for u in usages) for k in ("prompt_tokens", "completion_tokens", "total_tokens")}
    trace = results[0].model_dump(mode="json", exclude={"answer"})
    if len(results) > 1:
        trace["choices"] = [r.model_dump(mode="json", exclude={"answer", "question"}) for r in results[1:]]
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": i, "message": {"role": "assistant", "content": r.answer},
                     "finish_reason": finish_reason(r), "logprobs": None} for i, r in enumerate(results)],
        "usage": usage,
        "expertmix": trace,
    }
