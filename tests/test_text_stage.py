"""Stage I text on a tiny encoder: batching, exported embeddings."""

import numpy as np
import pytest

from merits.experiment import load_experiment
from merits.data import prepare
from merits.encoders.text_context import EncodedTurns
from merits.runs import load_embeddings
from merits.stages import text_utterance


@pytest.fixture(scope="module")
def small():
    return prepare("meld").subset(6)


def test_training_batches_are_length_sorted_pools(small):
    class Batcher:
        def pad(self, token_ids, spans=None):
            return {"n": len(token_ids)}

    lengths = np.arange(len(small.table))[::-1].copy()
    encoded = EncodedTurns([[0] * n for n in lengths])
    rows = text_utterance.rows_of(small, "train")
    batches = text_utterance.utterance_batches(Batcher(), small, encoded, rows, 4, np.random.default_rng(0))
    ids = [u for b in batches for u in b["utterance_ids"]]
    assert sorted(ids) == sorted(small.table["utterance_id"].to_numpy()[rows])  # every row exactly once
    evaluation = text_utterance.utterance_batches(Batcher(), small, encoded, rows, 4)
    order = [u for b in evaluation for u in b["utterance_ids"]]
    index = {u: i for i, u in enumerate(small.table["utterance_id"])}
    assert [lengths[index[u]] for u in order] == sorted(lengths[rows])


def test_stage1_text_exports_every_utterance(small, tiny_encoder, tmp_path):
    cfg = load_experiment("offline", [f"text_encoder.model={tiny_encoder}", "stage1_text.epochs=1", "stage1_text.batch_size=8"])
    from types import SimpleNamespace

    from merits.runtime import Runtime

    stage = text_utterance.TextUtteranceStage("stage1_text", "Text I", "stage1_text", (), ("text",))
    metrics = stage.train(stage.settings(cfg), SimpleNamespace(manifest=lambda s: small), {}, 0, tmp_path,
                          Runtime.create("cpu"))
    ids, arrays = load_embeddings(tmp_path / "embeddings.safetensors")
    assert sorted(ids) == sorted(small.table["utterance_id"])
    assert arrays["embeddings"].shape == (len(small.table), 32) and arrays["logits"].shape == (len(small.table), 7)
    assert {"train", "validation", "test"} <= set(metrics)
    assert (tmp_path / "checkpoint" / "encoder" / "config.json").is_file()
    replay = __import__("json").loads((tmp_path / "checkpoint" / "stage.json").read_text())
    assert replay["kind"] == "text_utterance" and replay["replay"]["max_length"] == cfg.text_encoder.max_length
