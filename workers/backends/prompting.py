"""Request shapes shared by the backends: chat conversations and completion-style prompts.

A chat model gets a conversation (a bare ``prompt`` becomes one user turn); a base model
(``chat: false``) gets plain text: messages are rendered in completion style (system text as a
preamble, ``Question: ...\\nAnswer:``), never through a chat template.
"""

from __future__ import annotations

from orchestrator.errors import InputError
from orchestrator.prompts import completion_prompt
from orchestrator.core import GenerationRequest


def conversation(request: GenerationRequest) -> list[dict[str, str]]:
    """The chat conversation for ``request`` (its messages, or its prompt as one user turn)."""
    if request.messages:
        return [dict(m) for m in request.messages]
    if request.prompt is not None:
        return [{"role": "user", "content": request.prompt}]
    raise _empty(request)


def completion_text(request: GenerationRequest) -> str:
    """The completion-style prompt for ``request`` (its prompt, or its messages rendered)."""
    if request.prompt is not None:
        return request.prompt
    if request.messages:
        return render_completion(request.messages)
    raise _empty(request)


def render_completion(messages: list[dict[str, str]]) -> str:
    """Messages -> one completion prompt: system preamble, earlier turns as Q/A, ends ``Answer:``.

    >>> render_completion([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}])
    'Be brief.\\n\\nQuestion: 2+2?\\nAnswer:'
    """
    system = "\n".join(m.get("content", "") for m in messages if m.get("role") == "system").strip()
    turns = [m for m in messages if m.get("role") != "system"]
    history: list[str] = []
    question = ""
    for m in turns:
        if m.get("role") == "assistant":
            history.append(f"Question: {question.strip()}\nAnswer: {m.get('content', '').strip()}")
            question = ""
        else:
            question = f"{question}\n{m.get('content', '')}" if question else m.get("content", "")
    preamble = "\n\n".join(p for p in [system, *history] if p)
    return completion_prompt(preamble or None, question)


def _empty(request: GenerationRequest) -> InputError:
    return InputError(
        f"request {request.key!r} for model {request.model!r} has neither messages nor a prompt",
        hint="set `messages` for chat models or `prompt` for base models",
    )
