"""The learned latent fuser (Mixture of Thoughts) on FAKES: tiny random LMs, in-process tokenizers."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from aggregators.latent.data import McItem  # noqa: E402
from aggregators.latent.train import TrainConfig, option_scores, peer_cache, train_fuser  # noqa: E402
from tests.workers.fusion_fakes import fake_byte_bpe, fake_lm, fake_sentencepiece  # noqa: E402
from workers.fusion.mot import LatentFuser, interaction_points, visible  # noqa: E402
from workers.fusion.mot_decode import latent_generate  # noqa: E402
from workers.fusion.token_fusion import Member, fuse_generate  # noqa: E402

pytestmark = pytest.mark.unit

ITEM = McItem(id="t/1", task="t", question="Water boils at what temperature?", choices=["100 degrees", "50 degrees"], gold=0)


@pytest.fixture()
def fuser():
    primary = fake_lm(fake_byte_bpe(), name="bpe", chat=True, seed=1, layers=6)
    peer = fake_lm(fake_sentencepiece(), name="spm", chat=False, seed=2)
    f = LatentFuser(primary, [peer], points=3, shared=32, heads=4)
    yield f
    f.close()


def test_interaction_points_are_evenly_spaced():
    assert interaction_points(24, 3) == [5, 11, 17]
    assert interaction_points(30, 3) == [7, 14, 21]


def test_zero_gate_fuser_equals_the_primary(fuser):
    cache = peer_cache(fuser, ITEM)
    with torch.no_grad():
        fused = option_scores(fuser, ITEM, cache)
        alone = option_scores(fuser, ITEM, None, fused=False)
    assert torch.equal(fused, alone)
    out = latent_generate(fuser, {}, ITEM.question, max_tokens=8)
    ref = fuse_generate([Member(fuser.primary, fuser.primary.prompt_ids(None, ITEM.question))], max_tokens=8)
    assert out.token_ids == ref.token_ids and out.fused_steps > 0


def test_only_interaction_layers_get_gradients(fuser):
    cache = peer_cache(fuser, ITEM)
    for layer in fuser.interactions:
        layer.alpha.data.fill_(0.5)            # past the zero init, every interaction weight matters
    loss = -option_scores(fuser, ITEM, cache)[0]
    loss.backward()
    grads = {n: p.grad for n, p in fuser.interactions.named_parameters()}
    assert all(g is not None and g.abs().sum() > 0 for n, g in grads.items() if "peer_norms" not in n), \
        [n for n, g in grads.items() if g is None or g.abs().sum() == 0]
    assert all(p.grad is None for p in fuser.primary.model.parameters())
    assert all(p.grad is None for p in fuser.peers[0].model.parameters())


def test_mask_is_causal_by_character_offset(fuser):
    """Changing what a peer says AFTER a primary token's text must not change that token's output."""
    for layer in fuser.interactions:
        layer.alpha.data.fill_(1.0)
    cache = peer_cache(fuser, ITEM)
    ends = cache.ends[0][0]
    cut = int(ends[ends < 10**9].max()) - 3      # peer tokens ending in the last 3 chars = "future"
    future = ends > cut
    changed = [[s.clone() for s in per] for per in cache.states]
    for s in changed[0]:
        s[0, future] += 5.0
    from workers.fusion.align import encode_pair

    p = fuser.primary
    enc = encode_pair(p, "Answer the question.", ITEM.question, ITEM.choices[0])
    ids = torch.tensor([enc.ids])
    p_ends = torch.tensor([enc.ends])
    outs = []
    for states in (cache.states, changed):
        allowed = visible(p_ends, cache.ends[0][:1])
        fuser._ctx = ([[s[:1].float() for s in states[0]]], allowed)
        with torch.no_grad():
            outs.append(p.model.get_decoder()(input_ids=ids).last_hidden_state[0])
        fuser._ctx = None
    early = p_ends[0] <= cut
    assert torch.allclose(outs[0][early], outs[1][early])
    assert not torch.allclose(outs[0][~early], outs[1][~early])


def test_training_moves_the_gate_and_save_load_round_trips(fuser, tmp_path):
    report = train_fuser(fuser, [ITEM, ITEM], TrainConfig(epochs=2, accumulate=1, lr=1e-2), progress=False)
    assert report["steps"] == 4 and report["trainable_parameters"] == fuser.trainable_parameters()
    assert any(float(l.alpha) != 0.0 for l in fuser.interactions)
    fuser.save(tmp_path / "f")
    cache = peer_cache(fuser, ITEM)
    with torch.no_grad():
        before = option_scores(fuser, ITEM, cache)
    lms = {fuser.primary.name: fuser.primary, fuser.peers[0].name: fuser.peers[0]}
    fuser.close()
    loaded = LatentFuser.load(tmp_path / "f", lms)
    try:
        with torch.no_grad():
            after = option_scores(loaded, ITEM, peer_cache(loaded, ITEM))
        assert torch.equal(before, after)
        assert loaded.config() == {**fuser.config()}
    finally:
        loaded.close()


@pytest.mark.parametrize("trend, kept", [("worse", 0), ("better", 4)])
def test_dev_checks_keep_the_best_checkpoint_and_never_end_below_the_primary(fuser, monkeypatch, trend, kept):
    """Dev accuracy is scored before training (zero gates: the primary) and every check; a run whose
    checkpoints only lose on dev ends as the untrained fuser, exactly the primary."""
    from aggregators.latent import train as train_mod

    seen: list[float] = []

    def scripted_dev_accuracy(f, items, caches):  # fake: a scripted dev curve, not a model score
        seen.append(0.5 + (0.1 if trend == "better" else -0.1) * len(seen))
        return seen[-1]

    monkeypatch.setattr(train_mod, "dev_accuracy", scripted_dev_accuracy)
    cfg = TrainConfig(epochs=2, accumulate=1, lr=1e-2, check_every=2)
    report = train_fuser(fuser, [ITEM, ITEM], cfg, progress=False, dev=[ITEM])
    assert [c["items"] for c in report["dev"]["checks"]] == [0, 2, 4]
    assert report["dev"]["kept_after_items"] == kept and report["dev"]["primary_acc"] == 0.5
    alphas = [float(layer.alpha) for layer in fuser.interactions]
    assert (all(a == 0.0 for a in alphas)) == (kept == 0)


def test_prompt_only_variant_decodes_with_the_primary_alone(fuser):
    fuser.prompt_only = True
    out = latent_generate(fuser, {}, ITEM.question, max_tokens=6)
    assert out.fused_steps == 0 and out.fed_tokens["spm"] == len(fuser.peers[0].prompt_ids(None, ITEM.question))
