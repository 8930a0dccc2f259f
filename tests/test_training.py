import numpy as np
import pytest
import torch

from merits.data import prepare
from merits.encoders.text import load_tokenizer_and_encoder, resolve_model
from merits.errors import DataError, ModelNotFoundError
from merits.metrics import classification_metrics, mean_std, weighted_f1
from merits.runs import load_embeddings, run_cached, save_embeddings
from merits.models.context import ConversationModelConfig
from merits.stages.context import ContextConfig, ContextStage
from merits.runtime import Runtime
from merits.training import Trainer, TrainerConfig, predict
from merits.runtime import seed_everything


def test_metrics_known_values():
    m = classification_metrics([0, 0, 1, 1, 2, 2], [0, 1, 1, 1, 2, 0], ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 6)
    # per class F1: a 0.5, b 0.8, c 2/3; equal supports -> weighted == macro
    assert m["per_class"]["b"]["f1"] == pytest.approx(0.8)
    assert m["weighted_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert m["macro_f1"] == pytest.approx(m["weighted_f1"])
    assert m["confusion"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    s = mean_std([0.5, 0.7])
    assert s["mean"] == pytest.approx(0.6) and s["std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert mean_std([0.4])["std"] == 0.0


def test_embeddings_round_trip(tmp_path):
    ids = ["a/1", "b/2", "c/3"]
    emb = np.arange(6, dtype=np.float32).reshape(3, 2)
    save_embeddings(tmp_path / "e.safetensors", ids, emb, logits=np.ones((3, 4), np.float32))
    got_ids, arrays = load_embeddings(tmp_path / "e.safetensors")
    assert got_ids == ids and (arrays["embeddings"] == emb).all() and arrays["logits"].shape == (3, 4)


def test_run_cached_skips_unchanged_and_reruns_changed(tmp_path):
    calls = []

    def compute(out):
        calls.append(out)
        (out / "x").write_text("1")
        return {"score": len(calls)}

    path = tmp_path / "stage" / "seed-0"
    first = run_cached(path, "k1", compute)
    assert first["score"] == 1 and first["stage_seconds"] >= 0 and first["peak_rss_mb"] > 0
    assert run_cached(path, "k1", compute) == first  # skipped
    assert len(calls) == 1 and (path / "x").is_file()
    assert run_cached(path, "k2", compute)["score"] == 2  # config changed -> recomputed


def test_run_cached_keeps_nothing_from_a_killed_stage(tmp_path):
    def dies(out):
        (out / "half").write_text("")
        raise KeyboardInterrupt

    path = tmp_path / "stage" / "seed-0"
    with pytest.raises(KeyboardInterrupt):
        run_cached(path, "k", dies)
    assert not path.exists()  # a half-written stage never looks finished
    assert run_cached(path, "k", lambda out: {"ok": 1})["ok"] == 1


def test_missing_model_names_it_and_says_how():
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        resolve_model("./no/such/model")
    with pytest.raises(ModelNotFoundError, match="no-such-org/no-such-model.*all-MiniLM-L6-v2"):
        load_tokenizer_and_encoder("no-such-org/no-such-model")


def run_stage2(cfg, manifest, stage1_embeddings, out):
    """Stage II alone, as the pipeline runs it: on Stage I embeddings at ``stage1_embeddings``."""
    import shutil
    from types import SimpleNamespace

    stage1 = out / "stage1"
    stage1.mkdir()
    shutil.copy(stage1_embeddings, stage1 / "embeddings.safetensors")
    stage = ContextStage("stage2_text", "Text II", "stage2_text", ("stage1_text",), ("text",))
    data = SimpleNamespace(manifest=lambda stage: manifest)
    return stage.train(cfg, data, {"stage1_text": stage1}, 0, out, Runtime.create("cpu"))


@pytest.fixture(scope="module")
def small_meld():
    return prepare("meld").subset(12)


def test_stage2_on_real_embeddings_learns(small_meld, tmp_path):
    """The training loop on a small real subset: frozen packaged-encoder embeddings of 36 MELD dialogues."""
    from merits.encoders.text import TextBatcher, pool

    tok, enc = load_tokenizer_and_encoder("all-MiniLM-L6-v2")
    texts = small_meld.table["text"].tolist()
    with torch.no_grad():
        b = TextBatcher(tok, 64).encode(texts)
        emb = pool(enc(**b).last_hidden_state, b["attention_mask"], "mean").numpy()
    save_embeddings(tmp_path / "stage1.safetensors", small_meld.table["utterance_id"], emb)
    seed_everything(0)
    cfg = ContextConfig(model=ConversationModelConfig(hidden=16, heads=2), epochs=15, patience=15, batch_size=4)
    metrics = run_stage2(cfg, small_meld, tmp_path / "stage1.safetensors", tmp_path)
    losses = [h["train_loss"] for h in metrics["history"]]
    assert losses[-1] < losses[0]
    assert 1 <= metrics["best_epoch"] <= 15
    assert set(metrics) >= {"train", "validation", "test"}
    assert metrics["test"]["n"] == int((small_meld.table["split"] == "test").sum())
    ids, arrays = load_embeddings(tmp_path / "embeddings.safetensors")
    assert sorted(ids) == sorted(small_meld.table["utterance_id"]) and arrays["embeddings"].shape[1] == 32
    assert (tmp_path / "checkpoint" / "model.safetensors").is_file() and (tmp_path / "confusion_test.png").is_file()


def test_stage2_names_utterances_without_embeddings(small_meld, tmp_path):
    ids = small_meld.table["utterance_id"].tolist()[:-2]
    save_embeddings(tmp_path / "e.safetensors", ids, np.zeros((len(ids), 4), np.float32))
    with pytest.raises(DataError, match="no embedding for 2 utterances"):
        run_stage2(ContextConfig(), small_meld, tmp_path / "e.safetensors", tmp_path)


def test_fit_restores_best_validation_weights():
    """Model selection: the weights kept are those of the best validation epoch, not the last."""
    torch.manual_seed(0)

    class Out:
        def __init__(self, logits):
            self.logits, self.embeddings = logits, logits

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)

        def forward(self, x):
            return Out(self.lin(x))

    x = torch.tensor([[1.0, 0.0], [0.0, 1.0]] * 8)
    y = torch.tensor([0, 1] * 8)
    batch = {"inputs": {"x": x}, "labels": y, "utterance_ids": list(range(16))}
    wrong = {"inputs": {"x": x}, "labels": 1 - y, "utterance_ids": list(range(16))}
    model = Tiny()
    with torch.no_grad():  # start out predicting the validation labelling
        model.lin.weight.copy_(torch.tensor([[0.0, 2.0], [2.0, 0.0]]))
        model.lin.bias.zero_()
    # training pushes towards y; validation rewards the opposite labelling, so the first epoch is best
    res = Trainer(TrainerConfig(epochs=8, patience=10), "cpu").fit(model, lambda e: [batch], lambda: [wrong],
                                                                     torch.optim.SGD(model.parameters(), lr=0.5))
    assert res.best_epoch == 1
    pred = predict(model, [wrong], "cpu")
    assert pred.logits.shape == (16, 2)
    # the restored model scores exactly the best recorded validation wF1, which beats the last epoch's
    assert weighted_f1(pred.label_ids, pred.predicted) == pytest.approx(res.best_validation_wf1)
    assert res.best_validation_wf1 > res.history[-1]["validation_wf1"]
