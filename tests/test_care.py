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


def test_a_care_checkpoint_feeds_stage_one_speech_end_to_end(tmp_path):
    """CARE checkpoint -> speech_encoder.kind: care -> feature cache -> Stage I speech (softmax layer weights over
    its (layers, dim) rows) -> Stage II, on real EmoDB clips."""
    import json

    import pandas as pd

    from conftest import shared
    from merits.experiment import load_experiment
    from merits.encoders.speech import SpeechEncoderConfig, build_speech_encoder
    from merits.pipeline import run_experiment

    tiny_care().save(tmp_path / "care")
    encoder = build_speech_encoder(SpeechEncoderConfig(kind="care", model=str(tmp_path / "care"), device="cpu"))
    assert (encoder.num_layers, encoder.dim) == (6, 32)
    labels = pd.read_csv(shared("emodb", "labels.csv"), dtype={"speaker": str})
    labels = labels[labels["emotion"].isin(["anger", "sadness"])].groupby("speaker").head(3)
    split = labels["speaker"].map(lambda s: "test" if s in ("03", "08") else "validation" if s in ("09",) else "train")
    table = pd.DataFrame({"conversation_id": labels["speaker"] + "-" + labels["emotion"], "split": split,
                          "text": "", "label": labels["emotion"],
                          "audio_path": [str(shared("emodb", "wav", f)) for f in labels["file"]]})
    table.sort_values("conversation_id", kind="stable").to_csv(tmp_path / "emodb.csv", index=False)
    cfg = load_experiment("offline", ["data.corpus=custom", f"data.root={tmp_path / 'emodb.csv'}", "modalities=[audio]",
                                           "speech_encoder.kind=care", f"speech_encoder.model={tmp_path / 'care'}",
                                           "speech_encoder.device=cpu", "stage1_audio.epochs=2", "stage2_audio.epochs=2",
                                           "seeds=[0]", f"runs_dir={tmp_path / 'runs'}", f"cache_dir={tmp_path / 'cache'}",
                                           "name=care"])
    run_experiment(cfg)
    m = json.loads((tmp_path / "runs" / "care" / "stage1_audio" / "seed-0" / "metrics.json").read_text())
    assert len(m["layer_weights"]) == 6 and abs(sum(m["layer_weights"]) - 1) < 1e-5  # softmax over CARE's rows
    assert (tmp_path / "runs" / "care" / "stage2_audio" / "seed-0" / "done.json").is_file()


TINY_WAVLM = ("random_backbone={hidden_size: 32, num_hidden_layers: 4, num_attention_heads: 2, intermediate_size: 64, "
              "conv_dim: [16, 16], conv_stride: [5, 64], conv_kernel: [10, 64], num_conv_pos_embeddings: 16, "
              "num_conv_pos_embedding_groups: 2, num_buckets: 32, max_bucket_distance: 64}")


def emodb_manifest(tmp_path, n=12):
    """Real EmoDB clips (2 s each); EmoDB has no transcripts, so each clip's sentence code stands in for one (ten
    sentences: a real grouping the semantic branch can learn)."""
    import pandas as pd

    from conftest import shared
    from merits.data import prepare

    labels = pd.read_csv(shared("emodb", "labels.csv"), dtype={"speaker": str}).head(n)
    stem = labels["file"].str.replace(".wav", "", regex=False)
    pd.DataFrame({"conversation_id": stem, "split": "train", "text": "sentence " + labels["text_id"],
                  "audio_path": [str(shared("emodb", "wav", f)) for f in labels["file"]]}).to_csv(tmp_path / "m.csv",
                                                                                             index=False)
    return prepare("custom", tmp_path / "m.csv")


def care_config(tiny_encoder, *extra):
    from merits.care.pretrain import CarePretrainConfig
    from merits.config import load_config

    return load_config("care/offline", [TINY_WAVLM, f"care.text_model={tiny_encoder}", "care.shared_layers=1",
                                        f"targets.semantic_model={tiny_encoder}", "batch_size=4", "crop_seconds=1.0",
                                        "lr=1e-3", "device=cpu", *extra], cls=CarePretrainConfig)


def test_both_losses_fall_on_real_speech(tmp_path, tiny_encoder):
    from merits.care.pretrain import pretrain

    r = pretrain(emodb_manifest(tmp_path), tmp_path / "out", care_config(tiny_encoder, "steps=40", "checkpoint_every=10",
                                                                          "validate_every=10"))
    h = r["history"]
    assert [x["step"] for x in h] == [10, 20, 30, 40] and h[0]["steps_per_s"] > 0
    assert h[-1]["semantic"] < h[0]["semantic"] and h[-1]["acoustic"] < h[0]["acoustic"], h
    assert h[-1]["validation_semantic"] < h[0]["validation_semantic"]
    targets = tmp_path / "out" / "targets"
    assert (targets / "semantic.safetensors").is_file() and (targets / "acoustic.safetensors").is_file()
    model = CareModel.load(tmp_path / "out" / "care")
    assert model.config.acoustic_dim == 25  # eGeMAPSv02 low-level descriptors


def test_a_killed_pretraining_resumes_to_the_uninterrupted_weights(tmp_path, tiny_encoder, monkeypatch):
    """Killed right after its first checkpoint, rerun: the same weights as a run never interrupted (model, optimiser,
    RNG state and data position are in the checkpoint)."""
    import merits.training.steps
    from merits.care.pretrain import pretrain
    from merits.errors import load_safetensors

    manifest = emodb_manifest(tmp_path, 8)
    cfg = care_config(tiny_encoder, "steps=8", "checkpoint_every=4", "validate_every=4")
    pretrain(manifest, tmp_path / "whole", cfg)

    class Killed(Exception):
        pass

    def kill(name):
        raise Killed(name)

    monkeypatch.setattr(merits.training.steps, "kill_point", kill)
    with pytest.raises(Killed):
        pretrain(manifest, tmp_path / "killed", cfg)
    monkeypatch.undo()
    resumed = pretrain(manifest, tmp_path / "killed", cfg)
    assert resumed["history"][0]["step"] == 4  # the first 4 steps came from the checkpoint
    a = load_safetensors(tmp_path / "whole" / "care" / "model.safetensors")
    b = load_safetensors(tmp_path / "killed" / "care" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_merits_care_pretrain_killed_by_sigkill_resumes(tmp_path, tiny_encoder):
    """The command line: killed (exit 137) right after its first checkpoint, rerun, it finishes from there and says
    how to use the model."""
    import os
    import subprocess
    import sys

    emodb_manifest(tmp_path, 6).save(tmp_path / "manifest")
    args = [sys.executable, "-m", "merits", "-q", "care", "pretrain", str(tmp_path / "manifest"), "--out",
            str(tmp_path / "out"), TINY_WAVLM, f"care.text_model={tiny_encoder}", "care.shared_layers=1",
            f"targets.semantic_model={tiny_encoder}", "batch_size=2", "crop_seconds=1.0", "steps=4",
            "checkpoint_every=2", "validate_every=2", "device=cpu", "threads=1"]
    env = {**os.environ, "MERITS_KILL_AT": "steps.checkpointed"}
    assert subprocess.run(args, env=env, capture_output=True, text=True).returncode == 137
    assert (tmp_path / "out" / "checkpoint" / "trainer_state.pt").is_file() and not (tmp_path / "out" / "care").exists()
    done = subprocess.run(args, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "CARE pretrained for 4 steps" in done.stdout and "speech_encoder.kind=care" in done.stdout
    import json

    assert [h["step"] for h in json.loads((tmp_path / "out" / "history.json").read_text())] == [2, 4]


def test_care_pretraining_on_two_processes_matches_one(tmp_path, tiny_encoder):
    """`torchrun --nproc_per_node 2 -m merits care pretrain ...` (gloo): each global batch is sharded over the
    processes, rank 0 computes the targets and writes; the weights equal a one-process run's (no dropout here, so
    the only difference is the order of float sums)."""
    import os
    import subprocess
    import sys

    from merits.errors import load_safetensors

    emodb_manifest(tmp_path, 6).save(tmp_path / "manifest")
    no_dropout = TINY_WAVLM[:-1] + (", hidden_dropout: 0.0, attention_dropout: 0.0, activation_dropout: 0.0, "
                                    "feat_proj_dropout: 0.0}")
    common = ["-m", "merits", "-q", "care", "pretrain", str(tmp_path / "manifest"), no_dropout,
              f"care.text_model={tiny_encoder}", "care.shared_layers=1", f"targets.semantic_model={tiny_encoder}",
              "batch_size=4", "crop_seconds=1.0", "steps=3", "checkpoint_every=3", "validate_every=3", "device=cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MERITS_QUIET": "1"}
    one = subprocess.run([sys.executable, *common, "--out", str(tmp_path / "one")], env=env, capture_output=True,
                         text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          "29734", *common, "--out", str(tmp_path / "two")], env=env, capture_output=True, text=True,
                         timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("CARE pretrained for 3 steps") == 1  # rank 0 reports
    a = load_safetensors(tmp_path / "one" / "care" / "model.safetensors")
    b = load_safetensors(tmp_path / "two" / "care" / "model.safetensors")
    assert max(float((a[k] - b[k]).abs().max()) for k in a) < 1e-5


def test_bad_audio_stops_or_is_skipped_with_a_report(tmp_path, tiny_encoder):
    """The project's audio policy: a corrupt clip stops pretraining naming it (audio.on_error=stop), or is left
    out and listed in targets/skipped.json (skip); an utterance without a transcript says to run merits asr."""
    import json

    from merits.care.pretrain import pretrain
    from merits.errors import DataError

    manifest = emodb_manifest(tmp_path, 5)
    bad = tmp_path / "broken.wav"
    bad.write_bytes(b"RIFF....WAVEfmt not audio")
    manifest.table.loc[2, "audio_path"] = str(bad)
    with pytest.raises(DataError, match="broken.wav"):
        pretrain(manifest, tmp_path / "stop", care_config(tiny_encoder, "steps=2", "checkpoint_every=2"))
    r = pretrain(manifest, tmp_path / "skip", care_config(tiny_encoder, "steps=2", "checkpoint_every=2",
                                                          "audio.on_error=skip"))
    skipped = json.loads((tmp_path / "skip" / "targets" / "skipped.json").read_text())
    assert list(skipped) == [manifest.table.loc[2, "utterance_id"]] and r["utterances"] == 4
    manifest.table.loc[1, "text"] = ""
    with pytest.raises(DataError, match="merits asr"):
        pretrain(manifest, tmp_path / "notext", care_config(tiny_encoder, "steps=2", "checkpoint_every=2"))
