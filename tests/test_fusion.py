"""Stage III co-attention fusion: shapes, padding invariance, cross-modal dependence, learning, checkpoint."""

import torch

from merits.models.checkpoint import load_model, save_model
from merits.models.context import ConversationModelConfig
from merits.models.fusion import CoAttentionFusion, CombinedModel, CombinedModelConfig, FusionModelConfig


def _model(**kw):
    torch.manual_seed(0)
    return CoAttentionFusion(FusionModelConfig(text_dim=12, audio_dim=6, num_classes=4, d_model=16, heads=2,
                                               feedforward=32, **kw))


def test_shapes():
    out = _model(layers=2).eval()(torch.randn(3, 5, 12), torch.randn(3, 5, 6), torch.ones(3, 5, dtype=torch.bool))
    assert out.logits.shape == (3, 5, 4) and out.embeddings.shape == (3, 5, 32)


def test_padding_changes_no_real_output():
    model = _model(layers=2).eval()
    t, s = torch.randn(1, 4, 12), torch.randn(1, 4, 6)
    alone = model(t, s, torch.ones(1, 4, dtype=torch.bool))
    tp, sp = torch.randn(2, 7, 12) * 10, torch.randn(2, 7, 6) * 10
    tp[0, :4], sp[0, :4] = t[0], s[0]
    mask = torch.zeros(2, 7, dtype=torch.bool)
    mask[0, :4], mask[1] = True, True
    batch = model(tp, sp, mask)
    torch.testing.assert_close(batch.logits[0, :4], alone.logits[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batch.embeddings[0, :4], alone.embeddings[0], atol=1e-5, rtol=1e-5)


def test_causal_fusion_sees_no_later_turn():
    for causal in (False, True):
        model = _model(layers=2, causal=causal).eval()
        t, s = torch.randn(1, 5, 12), torch.randn(1, 5, 6)
        t2, s2 = t.clone(), s.clone()
        t2[0, 3:], s2[0, 3:] = torch.randn(2, 12) * 5, torch.randn(2, 6) * 5
        mask = torch.ones(1, 5, dtype=torch.bool)
        same = torch.allclose(model(t, s, mask).logits[0, :3], model(t2, s2, mask).logits[0, :3], atol=1e-5)
        assert same == causal


def test_each_stream_queries_the_other():
    model = _model().eval()
    t, s, mask = torch.randn(1, 4, 12), torch.randn(1, 4, 6), torch.ones(1, 4, dtype=torch.bool)
    base = model(t, s, mask).embeddings
    s2 = s.clone()
    s2[0, 2] += 1.0
    changed = model(t, s2, mask).embeddings
    # the text half of utterance 0 changes when another utterance's speech changes
    assert not torch.allclose(base[0, 0, :16], changed[0, 0, :16])


def test_gradient_step_lowers_loss_and_checkpoint(tmp_path):
    model = _model(dropout=0.0)
    t, s, mask = torch.randn(4, 5, 12), torch.randn(4, 5, 6), torch.ones(4, 5, dtype=torch.bool)
    y = torch.randint(0, 4, (4, 5))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(10):
        loss = torch.nn.functional.cross_entropy(model(t, s, mask).logits.reshape(-1, 4), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    model.eval()
    save_model(model, tmp_path / "fusion")
    again = load_model(CoAttentionFusion, FusionModelConfig, tmp_path / "fusion").eval()
    torch.testing.assert_close(again(t, s, mask).logits, model(t, s, mask).logits)


def _combined():
    torch.manual_seed(0)
    text = ConversationModelConfig(input_dim=12, num_classes=4, hidden=8, heads=2)
    audio = ConversationModelConfig(input_dim=6, num_classes=4, hidden=4, heads=2)
    return CombinedModel(CombinedModelConfig(text, audio, FusionModelConfig(16, 8, 4, d_model=16, heads=2,
                                                                            feedforward=32)))


def test_combined_ablation_is_one_network_over_stage1_inputs(tmp_path):
    """Stages II + III as one model: padding-invariant, gradients reach both Stage II GRUs, checkpoint rebuilds it."""
    model = _combined()
    t, s = torch.randn(2, 7, 12), torch.randn(2, 7, 6)
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[0, 4:] = False
    out = model(t, s, mask)
    assert out.logits.shape == (2, 7, 4) and out.embeddings.shape == (2, 7, 32)
    out.logits[mask].sum().backward()
    assert model.text_context.gru.weight_ih_l0.grad.abs().sum() > 0
    assert model.audio_context.gru.weight_ih_l0.grad.abs().sum() > 0
    model.eval()
    alone = model(t[:1, :4], s[:1, :4], torch.ones(1, 4, dtype=torch.bool)).logits
    torch.testing.assert_close(model(t, s, mask).logits[0, :4], alone[0], atol=1e-5, rtol=1e-5)
    save_model(model, tmp_path / "combined")
    again = load_model(CombinedModel, CombinedModelConfig, tmp_path / "combined").eval()
    torch.testing.assert_close(again(t, s, mask).logits, model(t, s, mask).logits)


def test_modality_dropout_zeroes_one_stream_per_conversation_in_training_only():
    """stage3.model.modality_dropout: a dropped conversation loses its text or its audio (never both) while
    training; evaluation sees both streams, so predictions are unchanged by it."""
    import torch

    from merits.models.fusion import CoAttentionFusion, FusionModelConfig

    torch.manual_seed(0)
    cfg = FusionModelConfig(text_dim=6, audio_dim=4, num_classes=3, d_model=8, heads=2, feedforward=16,
                            modality_dropout=0.99)
    model = CoAttentionFusion(cfg)
    seen = []
    model.text_in.register_forward_hook(lambda m, i, o: seen.append(("text", i[0].abs().sum((1, 2)))))
    model.audio_in.register_forward_hook(lambda m, i, o: seen.append(("audio", i[0].abs().sum((1, 2)))))
    text, audio, mask = torch.randn(64, 5, 6) + 3, torch.randn(64, 5, 4) + 3, torch.ones(64, 5, dtype=torch.bool)
    model.train()
    model(text, audio, mask)
    t_zero, a_zero = seen[0][1] == 0, seen[1][1] == 0
    assert t_zero.any() and a_zero.any() and not (t_zero & a_zero).any()
    model.eval()
    seen.clear()
    out = model(text, audio, mask)
    assert (seen[0][1] > 0).all() and (seen[1][1] > 0).all()
    plain = CoAttentionFusion(FusionModelConfig(**{**cfg.__dict__, "modality_dropout": 0.0}))
    plain.load_state_dict(model.state_dict())
    assert torch.allclose(plain.eval()(text, audio, mask).logits, out.logits)
