"""Token and latent fusion on the REAL local models (SmolLM2, Qwen2.5-Coder, Gemma 3), in pipelines.

Each model loads once per session (``workers.fusion.lm.load_lm`` memoises per process); runs are
small: 2 questions, a few tokens.
"""

from __future__ import annotations

import os

import pytest

torch = pytest.importorskip("torch")

from orchestrator.config import ExpertRegistry  # noqa: E402
from orchestrator.context import RunContext  # noqa: E402
from orchestrator.core import Question  # noqa: E402
from orchestrator.executor import execute  # noqa: E402
from orchestrator.pipeline import Pipeline  # noqa: E402
from tests.fakes import FakeDispatcher  # noqa: E402
from workers.fusion.token_fusion import Member, fuse_generate  # noqa: E402
from workers.fusion.vocab import STOP  # noqa: E402

pytestmark = pytest.mark.integration
MODELS = ("smollm2-135m", "qwen-coder-0.5b", "gemma3-270m")


@pytest.fixture(scope="module")
def real_lms(models_ready):
    """The three models, with torch capped at one thread for this module only: the session's
    vLLM engines abort a batch when torch's thread count differs from the one they started with."""
    from workers.fusion.lm import load_lm, torch_threads

    reg = ExpertRegistry.default()
    old = os.environ.get("EXPERTMIX_TORCH_THREADS")
    os.environ["EXPERTMIX_TORCH_THREADS"] = "1"
    try:
        with torch_threads():
            yield {m: load_lm(reg.model(m), "cpu") for m in MODELS}
    finally:
        if old is None:
            os.environ.pop("EXPERTMIX_TORCH_THREADS", None)
        else:
            os.environ["EXPERTMIX_TORCH_THREADS"] = old


# text, and what each tokenizer must show: every id's bytes spell exactly the text back
ALIGNMENT = [
    ("leading space", " Paris"),
    ("double spaces", "a  b   c"),
    ("newlines", "line one\n\nline two\n"),
    ("tab and code", "def f(x):\n\treturn x"),
    ("multi-byte UTF-8", "naïve café, 日本語, Zürich"),
    ("emoji (4-byte)", "ok 🙂👍"),
    ("byte-fallback rare char", "\u2603 snowman \u0f3a"),
]


@pytest.mark.parametrize("label,text", ALIGNMENT, ids=[a[0] for a in ALIGNMENT])
def test_string_alignment_table_across_the_three_tokenizers(real_lms, label, text):
    spelled = {}
    for name, lm in real_lms.items():
        ids = lm.encode(text)
        spelled[name] = lm.table.text_bytes(ids)
    assert set(spelled.values()) == {text.encode("utf-8")}, (label, spelled)


def test_kinds_special_tokens_and_byte_fallback(real_lms):
    smol, qwen, gemma = (real_lms[m] for m in MODELS)
    assert (smol.table.kind, qwen.table.kind, gemma.table.kind) == ("byte-bpe", "byte-bpe", "sentencepiece")
    for lm in (smol, qwen, gemma):   # every logit id has a table row (ids past the table would be masked)
        assert lm.model.get_output_embeddings().out_features <= lm.table.size
    for lm, stop in ((smol, "<|im_end|>"), (qwen, "<|im_end|>"), (gemma, "<end_of_turn>")):
        assert lm.table.key(lm.tokenizer.convert_tokens_to_ids(stop)) == STOP
    nl = gemma.tokenizer.convert_tokens_to_ids("<0x0A>")
    assert gemma.table.token_bytes[nl] == b"\n" and b"\n" in gemma.table.same_bytes
    # the same word in the three vocabularies maps to one candidate string
    for lm in (smol, qwen, gemma):
        assert lm.table.lookup.get(b" the") is not None


def test_fusing_smollm2_with_itself_gives_its_greedy_tokens(real_lms):
    lm = real_lms["smollm2-135m"]
    ids = lm.prompt_ids("Answer briefly.", "What is the capital of France?")
    alone = fuse_generate([Member(lm, ids)], max_tokens=10)
    twice = fuse_generate([Member(lm, ids, 0.5), Member(lm, ids, 0.5)], max_tokens=10)
    hf = lm.model.generate(torch.tensor([ids]), max_new_tokens=10, do_sample=False, pad_token_id=0)[0, len(ids):].tolist()
    assert twice.token_ids == alone.token_ids == [t for t in hf if t not in lm.table.stop_ids][: len(alone.token_ids)]
    assert alone.text.strip()


def test_three_tokenizer_fusion_decodes_with_linear_peer_feeding(real_lms):
    q = "What is the capital of Australia?"
    members = [Member(real_lms[m], real_lms[m].prompt_ids("Answer briefly.", q), 1.0) for m in ("qwen-coder-0.5b", "smollm2-135m", "gemma3-270m")]
    out = fuse_generate(members, max_tokens=12)
    assert out.fused_steps >= 1 and out.text.strip()
    for m in members[1:]:   # prompt once, then a handful of tokens per step: never a re-prefill per step
        assert out.fed_tokens[m.lm.name] <= len(m.prompt_ids) + 4 * out.steps


def _run(pipe: Pipeline, questions):
    ctx = RunContext(registry=ExpertRegistry.default(), dispatcher=FakeDispatcher(), run_id="it")
    return execute(pipe, questions, ctx)


@pytest.mark.slow
def test_both_fusion_nodes_answer_inside_pipelines(real_lms):
    qs = [Question(id="q0", text="Write a Python function that reverses a string."),
          Question(id="q1", text="Which of these is a planet?\nA. the Moon\nB. Mars\nC. the Sun")]
    data = Pipeline.load("token-fusion").to_dict()
    next(n for n in data["nodes"] if n["name"] == "fuse")["params"].update(max_tokens=12)
    free, mc = _run(Pipeline.from_dict(data), qs)
    assert free.status == mc.status == "ok" and free.answer.strip()
    assert mc.answer[:3] in ("A. ", "B. ", "C. ") and any("exact multiple-choice" in n for n in mc.trace.notes)
    assert any("steps fused over" in n for n in free.trace.notes)

    data = Pipeline.load("latent-fusion").to_dict()
    next(n for n in data["nodes"] if n["name"] == "fuse")["params"] = {"fuser": None, "max_tokens": 12}
    (latent,) = _run(Pipeline.from_dict(data), qs[:1])
    assert latent.status == "ok" and any("UNTRAINED" in n for n in latent.trace.notes)
    # the untrained (zero-gate) fuser is exactly its primary decoding alone
    coder = ExpertRegistry.default().expert(latent.experts[0].name)
    lm = real_lms[coder.model]
    alone = fuse_generate([Member(lm, lm.prompt_ids(coder.system_prompt, qs[0].text))], max_tokens=12)
    assert latent.answer == alone.text.strip()
