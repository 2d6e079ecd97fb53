"""Prompt construction: how an expert is asked a question, how the aggregator is asked to fuse.

Chat models get messages (the expert's system prompt + the question); base models (``chat: false``)
get a completion-style prompt, never a chat template.
"""

from __future__ import annotations

import re

from orchestrator.config import ExpertSpec, ModelSpec
from orchestrator.core import GenerationRequest, Sampling

_THINK = re.compile(r"^.*?</think>", re.DOTALL)

SYNTHESIS_SYSTEM = (
    "You have been provided with a set of responses from various models to the latest user query. "
    "Your task is to synthesize these responses into a single, high-quality response. It is crucial to "
    "critically evaluate the information provided in these responses, recognizing that some of it may be "
    "biased or incorrect. Your response should not simply replicate the given answers but should offer a "
    "refined, accurate, and comprehensive reply to the instruction. Ensure your response is well-structured, "
    "coherent, and adheres to the highest standards of accuracy and reliability."
)


def completion_prompt(system: str | None, question: str) -> str:
    """Completion-style prompt for a base model."""
    preamble = f"{system.strip()}\n\n" if system else ""
    return f"{preamble}Question: {question.strip()}\nAnswer:"


def build_request(
    key: str, model: ModelSpec, system: str | None, user: str, sampling: Sampling
) -> GenerationRequest:
    """A request in the style the model needs (chat messages or a completion prompt)."""
    if model.chat:
        messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": user}]
        return GenerationRequest(key=key, model=model.name, messages=messages, sampling=sampling)
    return GenerationRequest(key=key, model=model.name, prompt=completion_prompt(system, user), sampling=sampling)


def expert_request(
    key: str, expert: ExpertSpec, model: ModelSpec, question: str, *, sampling: Sampling | None = None
) -> GenerationRequest:
    """How ``expert`` is asked ``question`` (its system prompt and sampling defaults)."""
    return build_request(key, model, expert.system_prompt, question, sampling or expert.sampling)


def strip_reasoning(text: str) -> str:
    """Drop reasoning before a ``</think>`` (as Symbolic-MoE does before aggregation)."""
    return _THINK.sub("", text, count=1).strip()


def synthesis_user_prompt(question: str, answers: list[str]) -> str:
    """The aggregator's user turn: the question and the k numbered answers."""
    listed = "\n\n".join(f"Response {i + 1}:\n{strip_reasoning(a)}" for i, a in enumerate(answers))
    return (
        f"Question: {question.strip()}\n\nResponses from models:\n\n{listed}\n\n"
        "Critically evaluate these responses and write one final, synthesised answer to the question."
    )
