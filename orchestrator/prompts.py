"""Prompt construction: how an expert is asked a question, how the aggregator is asked to fuse.

Chat models get messages (the expert's system prompt + the question); base models (``chat: false``)
get a completion-style prompt, never a chat template.

Each request must fit its model's context window (``ModelSpec.max_model_len``: 2,048 tokens for
the small local models, 128k for a hosted one that declares it). A user turn that would not fit
is cut to its head and tail with a marker saying how much was left out, and a warning names the
request; a window too small for even that raises :class:`InputError` for that request alone.
"""

from __future__ import annotations

import logging
import re

from orchestrator.config import ExpertSpec, ModelSpec
from orchestrator.core import GenerationRequest, Sampling
from orchestrator.errors import InputError

log = logging.getLogger(__name__)

TEMPLATE_TOKENS = 32  # chat-template / completion-frame overhead
MIN_USER_TOKENS = 64  # below this a cut prompt says nothing useful

_OPTION = re.compile(r"^\s*([A-J])[.)]\s+(.+?)\s*$")
LETTERS = "ABCDEFGHIJ"  # option letters of a multiple-choice question
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


def estimate_tokens(text: str) -> int:
    """A cautious token count without a tokenizer: ~4 ASCII characters per token, and one per
    other character (CJK characters are about a token each)."""
    ascii_chars = sum(ch.isascii() for ch in text)
    return ascii_chars // 4 + (len(text) - ascii_chars) + 1


def fit_to_context(key: str, model: ModelSpec, system: str | None, user: str, sampling: Sampling) -> str:
    """``user`` unchanged if the request fits ``model.max_model_len``, else its head and tail."""
    budget = model.max_model_len - sampling.max_tokens - TEMPLATE_TOKENS - estimate_tokens(system or "")
    need = estimate_tokens(user)
    if need <= budget:
        return user
    if budget < MIN_USER_TOKENS:
        raise InputError(
            f"{key}: model {model.name!r} has a {model.max_model_len}-token context; its system prompt and "
            f"max_tokens={sampling.max_tokens} leave {max(budget, 0)} tokens for the prompt",
            hint=f"lower max_tokens or raise max_model_len of {model.name!r} in the model registry",
        )
    keep = max(1, int(len(user) * budget / need * 0.9))
    head, tail = user[: keep * 2 // 3], user[len(user) - keep // 3:]
    marker = f"\n[... {len(user) - len(head) - len(tail)} characters left out to fit {model.name}'s context ...]\n"
    log.warning("%s: prompt of ~%d tokens cut to ~%d to fit %s's %d-token context (head and tail kept)",
                key, need, budget, model.name, model.max_model_len)
    return head + marker + tail


def build_request(
    key: str, model: ModelSpec, system: str | None, user: str, sampling: Sampling,
    context: list[dict[str, str]] | tuple = (),
) -> GenerationRequest:
    """A request in the style the model needs (chat messages or a completion prompt), cut to fit
    the model's context window when the user turn is too long (see the module docstring).

    ``context`` is the conversation before ``user`` (:attr:`orchestrator.core.Question.context`):
    its system messages follow ``system`` (the role prompt) in the one system message, and its
    turns come before ``user``, the oldest dropped first when they do not all fit.
    """
    system = "\n\n".join(x for x in (system, *(t["content"] for t in context if t["role"] == "system")) if x) or None
    turns = fit_turns(key, model, system, [t for t in context if t["role"] in ("user", "assistant")], user, sampling)
    user = fit_to_context(key, model, _with_turns(system, turns, model.chat), user, sampling)
    if model.chat:
        messages = ([{"role": "system", "content": system}] if system else []) + turns + [{"role": "user", "content": user}]
        return GenerationRequest(key=key, model=model.name, messages=messages, sampling=sampling)
    return GenerationRequest(key=key, model=model.name, prompt=completion_prompt(_with_turns(system, turns, False), user),
                             sampling=sampling)


def fit_turns(key: str, model: ModelSpec, system: str | None, turns: list[dict[str, str]], user: str,
              sampling: Sampling) -> list[dict[str, str]]:
    """The latest of ``turns`` that fit ``model``'s window beside the system prompt and ``user``
    (the oldest go first; a warning says how many were dropped)."""
    room = model.max_model_len - sampling.max_tokens - TEMPLATE_TOKENS - estimate_tokens(system or "") \
        - min(estimate_tokens(user), MIN_USER_TOKENS * 4)
    kept: list[dict[str, str]] = []
    for turn in reversed(turns):
        room -= estimate_tokens(turn["content"]) + 4
        if room < 0:
            break
        kept.insert(0, {"role": turn["role"], "content": turn["content"]})
    if len(kept) < len(turns):
        log.warning("%s: %d of %d earlier turns dropped (oldest first) to fit %s's %d-token context",
                    key, len(turns) - len(kept), len(turns), model.name, model.max_model_len)
    return kept


def _with_turns(system: str | None, turns: list[dict[str, str]], chat: bool) -> str | None:
    """The system text plus, for a base model, the conversation rendered as text (also what
    :func:`fit_to_context` must count besides the user turn)."""
    if not turns:
        return system
    rendered = "\n".join(f"{t['role'].capitalize()}: {t['content'].strip()}" for t in turns)
    if chat:  # chat turns are separate messages; only their size matters here
        return "\n\n".join(x for x in (system, rendered) if x)
    return "\n\n".join(x for x in (system, f"Conversation so far:\n{rendered}") if x)


def expert_request(
    key: str, expert: ExpertSpec, model: ModelSpec, question: str, *, sampling: Sampling | None = None,
    context: list[dict[str, str]] | tuple = (),
) -> GenerationRequest:
    """How ``expert`` is asked ``question`` (its system prompt and sampling defaults), after the
    conversation ``context`` when there is one."""
    return build_request(key, model, expert.system_prompt, question, sampling or expert.sampling, context)


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


FUSION_SYSTEM = (
    "You are given a question and candidate responses written by other models. Some of them are wrong. "
    "Check each response's reasoning and arithmetic, decide which final answer is correct (or work it out "
    "yourself if none is), and do not copy a response just because it comes first."
)
_FINAL_FORMAT = {
    "choice": "the letter of the correct option, as: Answer: <letter>",
    "number": "the final number, as: Answer: <number>",
    "boxed": "the final value, as: Answer: <value>",
    "boolean": "yes or no, as: Answer: yes/no",
}
MAX_RESPONSE_CHARS = 1_200  # k responses + question stay inside a 2048-token context


def fusion_user_prompt(question: str, responses: list[tuple[str, str | None]], kind: str) -> str:
    """The fusing aggregator's user turn: the question, each response with the final answer it
    states, the tally of final answers, and the format the fused answer must end with."""
    listed = []
    for i, (text, value) in enumerate(responses):
        body = strip_reasoning(text)
        body = body if len(body) <= MAX_RESPONSE_CHARS else "..." + body[-MAX_RESPONSE_CHARS:]
        stated = f" (final answer: {value})" if value is not None and kind != "text" else ""
        listed.append(f"Response {i + 1}{stated}:\n{body}")
    counts: dict[str, int] = {}
    for _, value in responses:
        if value is not None:
            counts[value] = counts.get(value, 0) + 1
    tally = ", ".join(f"{v} ({n} of {len(responses)})" for v, n in counts.items())
    fmt = _FINAL_FORMAT.get(kind)
    ask = (f"Check the responses step by step, then end with {fmt}." if fmt
           else "Write one final, accurate answer to the question, using what the responses got right.")
    proposed = f"\n\nFinal answers proposed: {tally}." if tally and kind != "text" else ""
    return f"Question: {question.strip()}\n\n" + "\n\n".join(listed) + proposed + f"\n\n{ask}"


def references_prompt(question: str, references: list[str]) -> str:
    """A Mixture-of-Agents layer-2+ turn: the question with the previous round's answers to build on."""
    listed = "\n\n".join(f"Response {i + 1}:\n{strip_reasoning(a)}" for i, a in enumerate(references))
    return (
        f"Question: {question.strip()}\n\nResponses from other experts to this question (some may be wrong):\n\n"
        f"{listed}\n\nCritically evaluate them, then give your own best answer to the question."
    )


DECOMPOSE_SYSTEM = (
    "You break a complex question into simpler sub-questions that can each be answered on their own "
    "and that together answer the original question."
)


def decompose_user_prompt(question: str, max_parts: int) -> str:
    """Decomposed Prompting's decomposer turn: at most ``max_parts`` numbered sub-questions."""
    return (
        f"Question: {question.strip()}\n\nWrite at most {max_parts} sub-questions, one per line, numbered "
        "1., 2., ... Each must be a complete question. If the question is already simple, write it "
        "unchanged as 1."
    )


COMPOSE_SYSTEM = "You answer a question using the answers to its sub-questions. Be accurate and concise."


def compose_user_prompt(question: str, parts: list[tuple[str, str]]) -> str:
    """The composer's turn: the question, then each sub-question with its answer."""
    listed = "\n\n".join(f"{i + 1}. {sq.strip()}\nAnswer: {strip_reasoning(a)}" for i, (sq, a) in enumerate(parts))
    return (
        f"Question: {question.strip()}\n\nSub-questions and their answers:\n\n{listed}\n\n"
        "Using these, write one final answer to the question."
    )


def split_choices(text: str) -> tuple[str, list[str]] | None:
    """``(stem, options)`` when ``text`` ends with option lines ``A. ..``, ``B. ..`` (in order)."""
    lines = text.rstrip().splitlines()
    options: list[str] = []
    i = len(lines) - 1
    while i >= 0 and (m := _OPTION.match(lines[i])):
        options.insert(0, m.group(2))
        if m.group(1) == "A":
            break
        i -= 1
    if len(options) < 2 or i < 1 or not _OPTION.match(lines[i]) or _OPTION.match(lines[i]).group(1) != "A":
        return None
    if [(_OPTION.match(l).group(1)) for l in lines[i:]] != list(LETTERS[: len(options)]):
        return None
    return "\n".join(lines[:i]).strip(), options
