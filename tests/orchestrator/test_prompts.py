"""Requests fit each model's context window: long prompts are cut to head + tail, never refused (unit)."""

from __future__ import annotations

import logging

import pytest

from orchestrator.config import ModelSpec
from orchestrator.core import Sampling
from orchestrator.errors import InputError
from orchestrator.prompts import build_request, estimate_tokens

pytestmark = pytest.mark.unit

LOCAL = ModelSpec(name="tiny", path="/models/tiny", max_model_len=2048)
HOSTED = ModelSpec(name="big", backend="litellm", litellm_model="openai/gpt-4o", max_model_len=128_000)
LONG = "Question at the start. " + "lorem ipsum dolor sit amet " * 800 + "Which option is right?"


def user_turn(req) -> str:
    return req.messages[-1]["content"] if req.messages else req.prompt


def test_short_prompts_are_sent_unchanged():
    req = build_request("k", LOCAL, "Be brief.", "What is 2+2?", Sampling(max_tokens=64))
    assert user_turn(req) == "What is 2+2?"


def test_a_long_prompt_is_cut_to_fit_a_2k_local_model(caplog):
    sampling = Sampling(max_tokens=256)
    with caplog.at_level(logging.WARNING, logger="orchestrator.prompts"):
        req = build_request("run/q7/expert", LOCAL, "You are an expert.", LONG, sampling)
    text = user_turn(req)
    assert estimate_tokens(text) + 256 + estimate_tokens("You are an expert.") <= LOCAL.max_model_len
    assert text.startswith("Question at the start.") and text.endswith("Which option is right?")
    assert "characters left out to fit tiny" in text
    assert "run/q7/expert" in caplog.text  # the warning names the request


def test_a_hosted_128k_model_gets_the_whole_prompt():
    req = build_request("k", HOSTED, None, LONG, Sampling(max_tokens=1024))
    assert user_turn(req) == LONG


def test_cjk_text_counts_about_a_token_per_character():
    assert estimate_tokens("我的膝盖跑步时疼" * 100) >= 800
    req = build_request("k", LOCAL, None, "我的膝盖跑步时疼" * 400, Sampling(max_tokens=128))
    assert estimate_tokens(user_turn(req)) <= 2048


def test_a_window_too_small_for_any_prompt_is_a_clear_error():
    with pytest.raises(InputError, match="max_tokens=2000.*raise max_model_len"):
        build_request("k", LOCAL, None, LONG, Sampling(max_tokens=2000))
