"""How backends shape requests: chat conversations and completion-style prompts for base models."""

from __future__ import annotations

import pytest

from orchestrator.errors import InputError
from orchestrator.core import GenerationRequest
from workers.backends.prompting import completion_text, conversation, render_completion

pytestmark = pytest.mark.unit


def test_a_bare_prompt_becomes_one_user_turn_for_chat_models():
    req = GenerationRequest(key="k", model="m", prompt="Hi there")
    assert conversation(req) == [{"role": "user", "content": "Hi there"}]


def test_messages_render_in_completion_style_never_a_chat_template():
    text = render_completion([
        {"role": "system", "content": "Short answers."},
        {"role": "user", "content": "Capital of Italy?"},
        {"role": "assistant", "content": "Rome"},
        {"role": "user", "content": "Capital of France?"},
    ])  # fmt: skip
    assert text == "Short answers.\n\nQuestion: Capital of Italy?\nAnswer: Rome\n\nQuestion: Capital of France?\nAnswer:"
    assert "<|" not in text and "<start_of_turn>" not in text


def test_an_explicit_prompt_wins_over_messages_for_base_models():
    req = GenerationRequest(key="k", model="m", prompt="raw", messages=[{"role": "user", "content": "x"}])
    assert completion_text(req) == "raw"


def test_a_request_without_text_is_an_input_error_naming_it():
    req = GenerationRequest(key="run/q1/e", model="m")
    with pytest.raises(InputError, match="run/q1/e.*neither messages nor a prompt"):
        conversation(req)
    with pytest.raises(InputError, match="run/q1/e"):
        completion_text(req)
