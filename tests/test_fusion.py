"""Stage III co-attention fusion: shapes, padding invariance, cross-modal dependence, learning, checkpoint."""

import torch

from merits.models.checkpoint import load_model, save_model
from merits.models.fusion import CoAttentionFusion, FusionModelConfig


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
