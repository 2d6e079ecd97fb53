"""Token fusion and the latent fuser on FAKES (tiny in-process tokenizers, random tiny LMs)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from tests.workers.fusion_fakes import fake_byte_bpe, fake_lm, fake_sentencepiece  # noqa: E402
from orchestrator.prompts import split_choices  # noqa: E402
from workers.fusion.lm import common_prefix, valid_prefix  # noqa: E402
from workers.fusion.token_fusion import (  # noqa: E402
    Member,
    choice_scores,
    fuse_choices,
    fuse_generate,
    normalise,
    perplexity_weights,
)
from workers.fusion.vocab import STOP  # noqa: E402

pytestmark = pytest.mark.unit

Q = "What is the capital of France?"


@pytest.fixture(scope="module")
def bpe_lm():
    return fake_lm(fake_byte_bpe(), name="bpe", chat=True, seed=1)


@pytest.fixture(scope="module")
def spm_lm():
    return fake_lm(fake_sentencepiece(), name="spm", chat=False, seed=2)


ALIGN = ["plain words", "  two  spaces ", "new\nlines\n\n", "\ttab", "naïve café", "日本語", "🙂 emoji", "x"]


@pytest.mark.parametrize("text", ALIGN)
def test_token_bytes_spell_the_text_in_both_tokenizer_kinds(bpe_lm, spm_lm, text):
    for lm in (bpe_lm, spm_lm):
        ids = lm.encode(text)
        assert lm.table.text_bytes(ids) == text.encode("utf-8"), (lm.name, lm.tokenizer.convert_ids_to_tokens(ids))


def test_tables_know_their_kind_and_unify_stop_tokens(bpe_lm, spm_lm):
    assert (bpe_lm.table.kind, spm_lm.table.kind) == ("byte-bpe", "sentencepiece")
    im_end = bpe_lm.tokenizer.convert_tokens_to_ids("<|im_end|>")
    eos = spm_lm.tokenizer.convert_tokens_to_ids("<eos>")
    assert bpe_lm.table.key(im_end) == STOP == spm_lm.table.key(eos)
    bos = spm_lm.tokenizer.convert_tokens_to_ids("<bos>")
    assert spm_lm.table.key(bos) is None and bos in spm_lm.table.banned_ids
    byte = spm_lm.tokenizer.convert_tokens_to_ids("<0x0A>")
    assert spm_lm.table.token_bytes[byte] == b"\n"


def test_valid_prefix_holds_back_a_cut_multibyte_character():
    data = "é日".encode()
    assert valid_prefix(data[:-1]) == "é" and valid_prefix(data) == "é日" and valid_prefix(b"") == ""
    assert common_prefix([1, 2, 3], [1, 2, 4, 5]) == 2


def test_stream_crop_to_common_prefix_equals_a_fresh_prefill(bpe_lm):
    prompt = bpe_lm.prompt_ids("Be brief.", Q)
    s = bpe_lm.stream(prompt)
    s.sync(b"The capital is Rome")
    step = s.sync(b"The capital is Paris")
    assert step.cropped >= 1 and s.cache.get_seq_length() == len(s.ids) == len(s.target_ids(b"The capital is Paris"))
    fresh = bpe_lm.stream(prompt).sync(b"The capital is Paris")
    assert torch.allclose(step.probs, fresh.probs, atol=1e-5)


def _hf_greedy(lm, ids, n):
    out = lm.model.generate(torch.tensor([ids]), max_new_tokens=n, do_sample=False, eos_token_id=lm.table.stop_ids,
                            suppress_tokens=lm.table.banned_ids or None, pad_token_id=0)
    gen = out[0, len(ids):].tolist()
    return [t for t in gen if t not in lm.table.stop_ids][: n]


@pytest.mark.parametrize("which", ["bpe", "spm"])
def test_fusing_an_expert_with_itself_gives_its_greedy_tokens(bpe_lm, spm_lm, which):
    lm = bpe_lm if which == "bpe" else spm_lm
    ids = lm.prompt_ids("Be brief.", Q)
    alone = fuse_generate([Member(lm, ids)], max_tokens=12)
    twice = fuse_generate([Member(lm, ids, 0.5), Member(lm, ids, 0.5)], max_tokens=12)
    assert twice.token_ids == alone.token_ids == _hf_greedy(lm, ids, 12)[: len(alone.token_ids)]
    assert twice.fused_steps > 0


def test_cross_tokenizer_fusion_feeds_peers_linearly_not_quadratically(bpe_lm, spm_lm):
    a = Member(bpe_lm, bpe_lm.prompt_ids("Be brief.", Q), 0.5)
    b = Member(spm_lm, spm_lm.prompt_ids("Be brief.", Q), 0.5)
    out = fuse_generate([a, b], max_tokens=20)
    assert out.fused_steps == out.steps - (out.finish_reason == "stop") - out.paused_steps
    # a peer is fed its prompt once plus a few tokens per step (crops re-feed only the suffix)
    assert out.fed_tokens["spm"] <= len(b.prompt_ids) + 4 * out.steps
    assert out.text == bpe_lm.table.text_bytes(out.token_ids).decode("utf-8", errors="ignore")


def test_gate_never_met_means_the_primary_alone(bpe_lm, spm_lm):
    a = Member(bpe_lm, bpe_lm.prompt_ids("Be brief.", Q), 0.5)
    b = Member(spm_lm, spm_lm.prompt_ids("Be brief.", Q), 0.5)
    gated = fuse_generate([a, b], max_tokens=10, gate=1e-9)
    assert gated.fused_steps == 0 and gated.token_ids == fuse_generate([a], max_tokens=10).token_ids
    assert gated.fed_tokens["spm"] == 0


def test_choice_scores_match_a_full_sequence_forward(bpe_lm):
    ids = bpe_lm.prompt_ids(None, Q)
    choices = ["Paris", "Rome and Milan"]
    got = choice_scores(bpe_lm, ids, choices)
    for choice, score in zip(choices, got):
        c = bpe_lm.encode(choice)
        with torch.no_grad():
            logits = bpe_lm.model(input_ids=torch.tensor([ids + c])).logits[0, :, : bpe_lm.table.size]
        logits[:, bpe_lm.table.banned_ids] = float("-inf")
        lp = torch.log_softmax(logits, -1)[len(ids) - 1: -1].gather(1, torch.tensor(c)[:, None]).sum()
        assert score == pytest.approx(float(lp) / len(choice.encode()), abs=1e-4)


def test_fused_choice_scores_are_the_weighted_mean():
    assert fuse_choices([[-1.0, -2.0], [-3.0, -0.5]], [3, 1]) == pytest.approx([-1.5, -1.625])
    assert normalise([0, 0]) == [0.5, 0.5]
    w = perplexity_weights([1.0, 2.0], tau=1.0)
    assert w[0] > w[1] and sum(w) == pytest.approx(1.0)


def test_split_choices_finds_trailing_option_lines():
    assert split_choices("Which?\nA. red\nB. blue") == ("Which?", ["red", "blue"])
    assert split_choices("What is 2+2?") is None
    assert split_choices("Pick:\nB. x\nC. y") is None
