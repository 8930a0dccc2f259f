"""Conversation context inside Stage I text (stage1_text.context): the window's layout, truncation and speakers on
real tokenizers; pooling over the current turn; training, caching, the report, exact replay, online replay and
stacking on a tiny encoder over real MELD dialogues."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from merits.experiment import load_experiment
from merits.encoders.text import resolve_model
from merits.encoders.text_context import TextContextConfig, encode_turns, segment_template
from merits.errors import ConfigError
from merits.pipeline import build_manifest, run_experiment
from merits.predict import TrainedRun, predict_run


@pytest.fixture(scope="module")
def minilm_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(resolve_model("all-MiniLM-L6-v2"))


def conversation(texts, speakers=None, conv="c1", first_turn=0) -> pd.DataFrame:
    t = pd.DataFrame({"conversation_id": conv, "turn": range(first_turn, first_turn + len(texts)), "text": texts})
    if speakers is not None:
        t["speaker"] = speakers
    return t


def decode(tok, ids) -> str:
    return tok.decode(ids)


def test_window_layout_marks_the_current_turn_and_keeps_conversations_apart(minilm_tokenizer):
    tok = minilm_tokenizer
    table = pd.concat([conversation(["hello there", "how are you", "fine thanks", "bye now"]),
                       conversation(["other talk"], conv="c2")])
    table = table.sample(frac=1.0, random_state=0).reset_index(drop=True)  # rows out of turn order
    enc = encode_turns(tok, table, TextContextConfig(past=1, future=1), 128)
    row = table.index[table["text"] == "fine thanks"][0]
    assert decode(tok, enc.ids[row]) == "[CLS] how are you [SEP] fine thanks [SEP] bye now [SEP]"
    start, end = enc.spans[row]
    assert decode(tok, enc.ids[row][start:end]) == "fine thanks"
    first = table.index[table["text"] == "hello there"][0]  # no past: the markers stay
    assert decode(tok, enc.ids[first]) == "[CLS] [SEP] hello there [SEP] how are you [SEP]"
    alone = table.index[table["text"] == "other talk"][0]  # nothing of c1 around c2's only turn
    assert decode(tok, enc.ids[alone]) == "[CLS] [SEP] other talk [SEP] [SEP]"
    # off: exactly the utterance-only inputs
    plain = encode_turns(tok, table, TextContextConfig(), 128)
    assert plain.spans is None and plain.ids == tok(table["text"].tolist(), truncation=True, max_length=128)["input_ids"]


def test_speakers_prefix_every_turn_where_named(minilm_tokenizer):
    tok = minilm_tokenizer
    table = conversation(["we won", "really", "yes"], speakers=["Joey", "", "Monica"])
    enc = encode_turns(tok, table, TextContextConfig(past=2, speakers=True), 128)
    assert decode(tok, enc.ids[2]) == "[CLS] joey : we won really [SEP] monica : yes [SEP] [SEP]"
    # speakers asked for, none known: the turns are read as they are
    bare = encode_turns(tok, conversation(["we won", "really"]), TextContextConfig(past=1, speakers=True), 128)
    assert decode(tok, bare.ids[1]) == "[CLS] we won [SEP] really [SEP] [SEP]"


def test_truncation_drops_far_turns_then_trims_the_farthest_kept_never_the_current(minilm_tokenizer):
    tok = minilm_tokenizer
    words = lambda a, n: " ".join(f"{a}{i}" for i in range(n))  # noqa: E731  n distinct one-token-ish words
    texts = ["one two three four five six", "seven eight nine ten", "the current turn is here", "alpha beta gamma delta"]
    table = conversation(texts)
    n = {t: len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts}
    special = 4  # [CLS] [SEP] [SEP] [SEP]
    # room for the current turn, its nearest past turn whole, and 2 tokens of the next (the future turn at distance 1)
    budget = special + n[texts[2]] + n[texts[1]] + 2
    enc = encode_turns(tok, table, TextContextConfig(past=2, future=1, max_tokens=budget), 128)
    assert len(enc.ids[2]) == budget
    assert decode(tok, enc.ids[2]) == "[CLS] seven eight nine ten [SEP] the current turn is here [SEP] alpha beta [SEP]"
    # a past turn that does not fit keeps its end (the words nearest the current turn); farther ones are dropped
    budget = special + n[texts[2]] + 3
    enc = encode_turns(tok, table, TextContextConfig(past=2, max_tokens=budget), 128)
    assert decode(tok, enc.ids[2]) == "[CLS] eight nine ten [SEP] the current turn is here [SEP] [SEP]"
    # a current turn longer than the whole budget is the only thing cut, and it keeps its span
    long = conversation(["a b", words("w", 40)])
    enc = encode_turns(tok, long, TextContextConfig(past=1, max_tokens=20), 128)
    start, end = enc.spans[1]
    assert len(enc.ids[1]) == 20 and end - start == 20 - special and start == 2


def test_templates_fit_each_tokenizer():
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(resolve_model("all-mpnet-base-v2"))  # RoBERTa-style pair template
    before, between, after = segment_template(tok)
    assert (len(before), len(between), len(after)) == (1, 2, 1)
    enc = encode_turns(tok, conversation(["hi", "so good", "ok"]), TextContextConfig(past=1, future=1), 128)
    assert decode(tok, enc.ids[1]) == "<s> hi </s> </s> so good </s> </s> ok </s>"
    pair = tok("hi", "so good")["input_ids"]  # the tokenizer's own pair layout, of which the window is an extension
    assert enc.ids[1][:len(pair) - 1] == pair[:-1]
    assert decode(tok, enc.ids[1][slice(*enc.spans[1])]).strip() == "so good"


def test_mean_pooling_reads_the_current_turn_only(tiny_encoder, minilm_tokenizer):
    from merits.encoders.text import TextBatcher
    from merits.models.utterance import TextClassifier, TextClassifierConfig

    model = TextClassifier(TextClassifierConfig(tiny_encoder, 3)).eval()
    table = conversation(["first turn here", "second", "and a third one"])
    enc = encode_turns(model.tokenizer, table, TextContextConfig(past=1, future=1), 128)
    batch = TextBatcher(model.tokenizer, 128).pad(enc.ids, enc.spans)
    assert batch["pool_mask"].sum(1).tolist() == [e - s for s, e in enc.spans]
    with torch.no_grad():
        out = model(**batch)
        states = model.encoder(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).last_hidden_state
    for b, (s, e) in enumerate(enc.spans):
        assert torch.allclose(out.embeddings[b], states[b, s:e].mean(0), atol=1e-6)


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match="past"):
        load_experiment("offline", ["stage1_text.context.past=-1"])
    with pytest.raises(ConfigError, match="max_tokens"):
        load_experiment("offline", ["stage1_text.context.max_tokens=4"])


QUICK = ["data.max_conversations=6", "data.options.strict_counts=false", "stage1_text.epochs=1", "stage2_text.epochs=1",
         "seeds=[0]"]


@pytest.fixture(scope="module")
def context_run(tmp_path_factory, tiny_encoder):
    runs = tmp_path_factory.mktemp("runs")
    cfg = load_experiment("offline", QUICK + [f"text_encoder.model={tiny_encoder}", f"runs_dir={runs}", "name=ctx",
                                              "stage1_text.context.past=2", "stage1_text.context.future=1",
                                              "stage1_text.context.speakers=true", "stage1_text.context.max_tokens=96"])
    return cfg, run_experiment(cfg), runs / "ctx"


def test_a_context_run_replays_as_trained_and_names_its_window(context_run, tmp_path):
    cfg, result, root = context_run
    assert "MELD (Text I context: past 2, future 1, speakers)" in result["table"]
    stage = json.loads((root / "stage1_text" / "seed-0" / "checkpoint" / "stage.json").read_text())
    assert stage["replay"]["context"] == {"past": 2, "future": 1, "speakers": True, "max_tokens": 96}
    run = TrainedRun.open(root)
    out = predict_run(run, build_manifest(cfg), tmp_path / "pred")
    for name in ("stage1_text", "stage2_text"):
        trained = pd.read_csv(root / name / "seed-0" / "predictions.csv").set_index("utterance_id")["predicted"]
        replayed = out.table.set_index("utterance_id")[f"predicted_{name}"]
        assert (replayed == trained.reindex(replayed.index)).all(), name
        recorded = json.loads((root / name / "seed-0" / "metrics.json").read_text())["test"]["weighted_f1"]
        assert out.summary["scores"][name]["test"]["weighted_f1"] == pytest.approx(recorded, abs=1e-9)
    assert out.summary["text_context"] == {"stage1_text": {"trained": "past 2, future 1, speakers",
                                                           "replayed": "past 2, future 1, speakers"}}
    assert not any("online" in n for n in out.summary["notes"])


def test_online_replay_reads_no_later_turn_and_says_so(context_run, tmp_path):
    """Online, Stage I reads each turn without the turns after it: its output equals the offline output on the
    conversation cut after that turn; the summary says the run was trained with future turns."""
    cfg, _, root = context_run
    run = TrainedRun.open(root)
    manifest = build_manifest(cfg)
    t = manifest.table
    conv = t.loc[t["split"] == "test", "conversation_id"].iloc[0]
    one = manifest.select(t.loc[t["conversation_id"] == conv, "utterance_id"])
    online = predict_run(run, one, tmp_path / "online", stage="stage1_text", online=True)
    assert any("1 later turn" in n and "reads none" in n for n in online.summary["notes"])
    assert online.summary["text_context"]["stage1_text"]["replayed"] == "past 2, speakers"
    probs = [c for c in online.table.columns if c.startswith("p_")]
    got = online.table.set_index("utterance_id")
    turns = one.table.sort_values("turn")
    for k in range(len(turns)):
        cut = one.select(turns["utterance_id"].iloc[:k + 1])
        alone = predict_run(run, cut, tmp_path / f"cut{k}", stage="stage1_text").table.set_index("utterance_id")
        u = turns["utterance_id"].iloc[k]
        assert np.abs(got.loc[u, probs].to_numpy(float) - alone.loc[u, probs].to_numpy(float)).max() < 1e-5
    offline = predict_run(run, one, tmp_path / "offline", stage="stage1_text").table.set_index("utterance_id")
    first = turns["utterance_id"].iloc[0]  # the first turn has a later turn offline: its input differs online
    assert not np.allclose(offline.loc[first, probs].to_numpy(float), got.loc[first, probs].to_numpy(float))


def test_the_context_is_in_the_cache_key(context_run, monkeypatch):
    """A finished context run reruns nothing; another window retrains Stage I (and so Stage II)."""
    cfg, _, root = context_run
    from merits.stages import text_utterance

    calls = []
    real = text_utterance.fine_tune
    monkeypatch.setattr(text_utterance, "fine_tune", lambda *a, **k: calls.append(1) or real(*a, **k))
    run_experiment(cfg)
    assert calls == []
    other = load_experiment("offline", QUICK + [f"text_encoder.model={cfg.text_encoder.model}", f"runs_dir={cfg.runs_dir}",
                                                "name=ctx", "stage1_text.context.past=1", "stage1_text.context.speakers=true",
                                                "stage1_text.context.max_tokens=96"])
    assert "past 1, speakers" in run_experiment(other)["table"]
    assert calls == [1]


def test_stacking_keeps_working_with_context(tmp_path, tiny_encoder):
    cfg = load_experiment("offline", QUICK + [f"text_encoder.model={tiny_encoder}", f"runs_dir={tmp_path}", "name=ctx-oof",
                                              "stacking.folds=2", "stage1_text.context.past=1",
                                              "stage1_text.context.future=1"])
    run_experiment(cfg)
    root = tmp_path / "ctx-oof"
    member = json.loads((root / "stage1_text" / "folds" / "seed-0" / "fold-0" / "checkpoint" / "stage.json").read_text())
    assert member["replay"]["context"]["past"] == 1
    out = predict_run(TrainedRun.open(root), build_manifest(cfg), tmp_path / "pred")
    for stage in ("stage1_text", "stage2_text"):
        recorded = json.loads((root / stage / "seed-0" / "metrics.json").read_text())["test"]["weighted_f1"]
        assert out.summary["scores"][stage]["test"]["weighted_f1"] == pytest.approx(recorded, abs=1e-9), stage


def test_live_store_keeps_speakers_and_reads_an_older_store(tmp_path):
    """merits serve's live turns carry their speaker (for runs trained with speaker names); a store written before
    turns had speakers gains the column on open."""
    import sqlite3

    from merits.serve.live import LiveStore

    old = tmp_path / "old.sqlite"
    db = sqlite3.connect(old)
    db.execute("CREATE TABLE turns (conversation TEXT NOT NULL, turn INTEGER NOT NULL, text TEXT NOT NULL, audio TEXT "
               "NOT NULL, result TEXT NOT NULL, created REAL NOT NULL, PRIMARY KEY (conversation, turn))")
    db.execute("INSERT INTO turns VALUES ('c', 0, 'hi', '', '{}', 0)")
    db.commit()
    db.close()
    store = LiveStore(old)
    store.add("c", 1, "hello Joey", "", {"label": "joy"}, speaker="Monica")
    turns = store.turns("c")
    assert [t["speaker"] for t in turns] == ["", "Monica"] and turns[1]["result"] == {"label": "joy"}
    store.close()
