"""The wire format: OpenAI chat-completion requests in, ``chat.completion`` objects out.

Every message's text is checked before anything is queued: a lone UTF-16 surrogate or a control
character (other than tab, newline, carriage return) is something no tokenizer takes, so it is a
400 naming the message and position, never a failure inside a batch shared with other requests.
"""

from __future__ import annotations

import re
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from orchestrator.core import Budget, Result
from orchestrator.errors import InputError

DEFAULT_MODEL_ALIAS = "expertmix"  # the `model` value that means "this gateway's default pipeline"
MAX_MODEL_CHARS = 256
_UNTOKENIZABLE = re.compile("[\ud800-\udfff\x00-\x08\x0b\x0c\x0e-\x1f]")


def untokenizable(text: str) -> str | None:
    """A one-line reason when ``text`` holds what no tokenizer takes, else None."""
    bad = _UNTOKENIZABLE.search(text)
    if bad is None:
        return None
    kind = "a lone UTF-16 surrogate" if "\ud800" <= bad.group() <= "\udfff" else "a control character"
    return f"character {bad.start()} is {kind} (U+{ord(bad.group()):04X}), which no model can read"


class ChatMessage(BaseModel):
    """One chat message; ``content`` is a string or OpenAI content parts (text parts are used)."""

    model_config = ConfigDict(extra="allow")
    role: str
    content: str | list[dict[str, Any]] | None = None

    @field_validator("content")
    @classmethod
    def _readable(cls, content: Any) -> Any:
        for text in _texts(content):
            reason = untokenizable(text)
            if reason:
                raise ValueError(f"{reason} (fix: remove it or escape it as text)")
        return content

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
    """The fields the gateway reads; other OpenAI fields are accepted and ignored."""

    model_config = ConfigDict(extra="allow")
    model: str = Field(default=DEFAULT_MODEL_ALIAS, max_length=MAX_MODEL_CHARS)
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = None
    stream: bool = False
    expertmix_budget: Budget | None = None


def last_user_message(messages: list[ChatMessage]) -> str:
    """The text of the last ``user`` message (the question)."""
    for msg in reversed(messages):
        if msg.role == "user":
            return msg.text()
    raise InputError("the request has no message with role 'user'",
                     hint='put the question in {"role": "user", "content": "..."}')


def usage_of(result: Result) -> dict[str, int]:
    """Prompt and completion tokens over every model call that made ``result``."""
    trace = result.trace
    prompt = getattr(trace, "prompt_tokens", None)
    completion = getattr(trace, "completion_tokens", None)
    if prompt is None or completion is None:  # an older trace: expert answers only
        prompt, completion = 0, sum(a.completion_tokens for a in trace.answers)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion}


def chat_completion(result: Result, *, request_id: str, model: str) -> dict[str, Any]:
    """A ``chat.completion`` object for ``result``, with the trace under ``expertmix``."""
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": result.answer},
                     "finish_reason": "stop", "logprobs": None}],
        "usage": usage_of(result),
        "expertmix": result.model_dump(mode="json", exclude={"answer"}),
    }
