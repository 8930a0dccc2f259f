import numpy as np
import pytest
import torch

from merits.models.checkpoint import load_model, save_model
from merits.models.context import ConversationModel, ConversationModelConfig
from merits.models.utterance import TextClassifier, TextClassifierConfig


def _conv_model(**kw):
    torch.manual_seed(0)
    return ConversationModel(ConversationModelConfig(input_dim=12, num_classes=5, hidden=8, heads=2, **kw))


def test_context_shapes():
    model = _conv_model().eval()
    x, mask = torch.randn(3, 7, 12), torch.ones(3, 7, dtype=torch.bool)
    mask[1, 4:] = False
    out = model(x, mask)
    assert out.logits.shape == (3, 7, 5)
    assert out.embeddings.shape == (3, 7, 16)


def test_padding_changes_no_real_output():
    model = _conv_model().eval()
    x = torch.randn(1, 5, 12)
    alone = model(x, torch.ones(1, 5, dtype=torch.bool))
    # the same conversation padded to 9 turns with garbage, next to a longer conversation
    padded = torch.randn(2, 9, 12) * 10
    padded[0, :5] = x[0]
    mask = torch.zeros(2, 9, dtype=torch.bool)
    mask[0, :5] = True
    mask[1, :] = True
    batch = model(padded, mask)
    torch.testing.assert_close(batch.logits[0, :5], alone.logits[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(batch.embeddings[0, :5], alone.embeddings[0], atol=1e-5, rtol=1e-5)


def test_context_uses_the_conversation():
    # changing another turn changes an utterance's output (the model is contextual, not per utterance)
    model = _conv_model().eval()
    x = torch.randn(1, 4, 12)
    mask = torch.ones(1, 4, dtype=torch.bool)
    y = x.clone()
    y[0, 3] += 1.0
    assert not torch.allclose(model(x, mask).logits[0, 0], model(y, mask).logits[0, 0])


@pytest.mark.parametrize("causal", [False, True])
def test_causal_context_sees_no_later_turn(causal):
    """causal: turn t's output is the same whatever comes after it (and with padding); the same output width.
    Bidirectional (the paper's): a later turn changes earlier outputs."""
    model = _conv_model(causal=causal).eval()
    x = torch.randn(1, 6, 12)
    later = x.clone()
    later[0, 4:] = torch.randn(2, 12) * 5
    mask = torch.ones(1, 6, dtype=torch.bool)
    a, b = model(x, mask), model(later, mask)
    assert a.embeddings.shape == (1, 6, 16)
    same = torch.allclose(a.logits[0, :4], b.logits[0, :4], atol=1e-5)
    assert same == causal
    if causal:  # the first 4 turns alone, padded, give the same outputs too
        padded, short = torch.randn(1, 6, 12), torch.zeros(1, 6, dtype=torch.bool)
        padded[0, :4], short[0, :4] = x[0, :4], True
        torch.testing.assert_close(model(padded, short).logits[0, :4], a.logits[0, :4], atol=1e-5, rtol=1e-5)


def test_context_gradient_step_lowers_loss():
    model = _conv_model(dropout=0.0, input_dropout=0.0)
    x, mask = torch.randn(4, 6, 12), torch.ones(4, 6, dtype=torch.bool)
    y = torch.randint(0, 5, (4, 6))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(model(x, mask).logits.reshape(-1, 5), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_context_checkpoint_rebuilds_model(tmp_path):
    model = _conv_model().eval()
    save_model(model, tmp_path / "ckpt")
    again = load_model(ConversationModel, ConversationModelConfig, tmp_path / "ckpt").eval()
    x, mask = torch.randn(2, 3, 12), torch.ones(2, 3, dtype=torch.bool)
    torch.testing.assert_close(again(x, mask).logits, model(x, mask).logits)


def test_text_classifier_shapes_step_and_checkpoint(tiny_encoder, tmp_path):
    torch.manual_seed(0)
    model = TextClassifier(TextClassifierConfig(tiny_encoder, 3, ("a", "b", "c"), "mean", 0.0))
    enc = model.tokenizer(["hello there", "I am so angry right now!", "ok"], padding=True, return_tensors="pt")
    out = model(enc["input_ids"], enc["attention_mask"])
    assert out.logits.shape == (3, 3) and out.embeddings.shape == (3, 32)
    y = torch.tensor([0, 1, 2])
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    first = None
    for _ in range(5):
        loss = torch.nn.functional.cross_entropy(model(enc["input_ids"], enc["attention_mask"]).logits, y)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < first
    model.eval()
    model.save(tmp_path / "ckpt")
    again = TextClassifier.load(tmp_path / "ckpt").eval()
    torch.testing.assert_close(again(enc["input_ids"], enc["attention_mask"]).logits,
                               model(enc["input_ids"], enc["attention_mask"]).logits)
    assert again.config.labels == ("a", "b", "c")


def test_mean_pooling_ignores_padding():
    from merits.encoders.text import pool

    h = torch.tensor([[[1.0, 1.0], [3.0, 3.0], [100.0, 100.0]]])
    m = torch.tensor([[1, 1, 0]])
    assert pool(h, m, "mean").tolist() == [[2.0, 2.0]]
    assert pool(h, m, "cls").tolist() == [[1.0, 1.0]]
    assert np.isfinite(pool(h, torch.zeros_like(m), "mean").numpy()).all()


def _speech_head():
    from merits.models.utterance import SpeechHead, SpeechHeadConfig

    torch.manual_seed(0)
    return SpeechHead(SpeechHeadConfig(num_layers=3, input_dim=10, num_classes=4, hidden=[16, 8], dropout=0.0))


def test_speech_head_layer_weights_sum_to_one_and_shapes():
    head = _speech_head()
    with torch.no_grad():
        head.layer_logits.copy_(torch.tensor([0.3, -1.0, 2.0]))
    assert head.layer_weights.detach().sum().item() == pytest.approx(1.0)
    out = head(torch.randn(5, 3, 10))
    assert out.logits.shape == (5, 4) and out.embeddings.shape == (5, 8)


def test_speech_head_normalises_and_learns(tmp_path):
    from merits.models.utterance import SpeechHead, SpeechHeadConfig

    head = _speech_head()
    x = torch.randn(32, 3, 10) * 1000 + 50  # openSMILE-like scales
    y = (x[:, 0, 0] > 50).long() + 2 * (x[:, 0, 1] > 50).long()
    head.set_normalisation(x)
    opt = torch.optim.Adam(head.parameters(), lr=1e-2)
    losses = []
    for _ in range(40):
        loss = torch.nn.functional.cross_entropy(head(x).logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert head.layer_logits.grad is not None
    save_model(head.eval(), tmp_path / "head")
    again = load_model(SpeechHead, SpeechHeadConfig, tmp_path / "head").eval()
    torch.testing.assert_close(again(x).logits, head(x).logits)  # normalisation travels with the checkpoint
