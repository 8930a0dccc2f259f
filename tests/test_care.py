"""CARE (merits.care): every branch's shapes, the gradient stop, checkpoints that rebuild alone; tiny random WavLM
and RoBERTa configs built here (no weights are downloaded)."""

import pytest
import torch

from merits.care import CareConfig, CareModel


def tiny_care(acoustic_dim: int = 5, seed: int = 0) -> CareModel:
    from transformers import RobertaConfig, RobertaModel, WavLMConfig, WavLMModel

    torch.manual_seed(seed)
    wavlm = WavLMModel(WavLMConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                                   conv_dim=(16, 16), conv_stride=(5, 64), conv_kernel=(10, 64),
                                   num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, num_buckets=32,
                                   max_bucket_distance=64))
    text = RobertaModel(RobertaConfig(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                                      vocab_size=50, max_position_embeddings=64))
    return CareModel(CareConfig(backbone="tiny", text_model="tiny", shared_layers=2, acoustic_dim=acoustic_dim),
                     wavlm, text)


def test_every_branch_has_its_shape():
    model = tiny_care()
    out = model(torch.randn(3, 16000))  # 1 s at 16 kHz; the tiny front end strides 320 samples: 50 frames per s
    t = out.hidden_states[0].shape[1]
    assert t == 49 and out.semantic.shape == (3, 32) and out.acoustic.shape == (3, t, 5)
    assert len(out.hidden_states) == 1 + 2 + 2 and all(s.shape == (3, t, 32) for s in out.hidden_states)
    emb = model.embed(torch.randn(16000))
    assert emb.shape == (model.num_layers, model.dim) == (6, 32)
    with pytest.raises(Exception, match="shared_layers"):
        CareModel(CareConfig(shared_layers=4), *_parts())


def _parts():
    m = tiny_care()
    from transformers import RobertaConfig, RobertaModel, WavLMConfig, WavLMModel

    return (WavLMModel(WavLMConfig(**m.backbone_config.to_dict())), RobertaModel(RobertaConfig(**m.text_config.to_dict())))


def test_the_acoustic_loss_leaves_the_shared_layers_unchanged():
    """After a step on the acoustic loss alone the shared layers 0..k-1 (and the frozen parts) are unchanged and the
    acoustic layers moved; a step on the semantic loss moves the shared layers."""
    model = tiny_care()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    out = model(torch.randn(2, 16000))
    torch.nn.functional.mse_loss(out.acoustic, torch.randn_like(out.acoustic)).backward()
    opt.step()
    after = {k: v.clone() for k, v in model.state_dict().items()}
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.startswith(("acoustic_layers.", "acoustic_head.")) for k in changed), sorted(changed)[:5]
    opt.zero_grad()
    out = model(torch.randn(2, 16000))
    torch.nn.functional.mse_loss(out.semantic, torch.randn_like(out.semantic)).backward()
    opt.step()
    moved = {k.split(".")[0] for k in after if not torch.equal(after[k], model.state_dict()[k])}
    assert "shared" in moved and "semantic_layers" not in moved and "front" not in moved


def test_a_checkpoint_rebuilds_the_model_alone(tmp_path):
    model = tiny_care().eval()
    model.save(tmp_path / "care")
    again = CareModel.load(tmp_path / "care").eval()
    x = torch.randn(8000)
    assert torch.allclose(model.embed(x), again.embed(x), atol=1e-6)
