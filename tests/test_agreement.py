"""Teacher agreement: hand-computed tables, Cohen's kappa against sklearn, valence thresholds on the real
MSP-Podcast label file, MELD's gold sentiment, and the `merits teach` / `merits agreement` commands."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score
from sklearn.metrics import confusion_matrix as sk_confusion

from conftest import shared
from merits.cli import main
from merits.data import prepare
from merits.data.manifest import Manifest
from merits.errors import DataError
from merits.teach import SENTIMENTS, Answer, LabelStore, agreement_table, cohen_kappa, valence_to_sentiment
from merits.teach.agreement import confusion
from merits.teach.label_store import text_hash

N, U, P = "negative", "neutral", "positive"


def store_labels(store, manifest, teacher, labels, prompt="p0"):
    """Put ``labels`` (a label, or any other string = an invalid answer) for the manifest's rows, in order."""
    for uid, text, lab in zip(manifest.table["utterance_id"], manifest.table["text"], labels):
        if lab is None:
            continue
        answer = Answer(lab, lab, "ok") if lab in SENTIMENTS else Answer(lab, None, "invalid")
        store.put(manifest.corpus, uid, teacher, prompt, text_hash(text), answer)


def test_hand_computed_table(tmp_path):
    ref = [N, N, N, U, U, U, U, P, P, P]
    pred = [N, N, U, U, U, P, U, P, P, N]
    # rows = reference: negative [2 1 0], neutral [0 3 1], positive [1 0 2]; p_o = 7/10,
    # p_e = (3*3 + 4*4 + 3*3) / 100 = 0.34, kappa = (0.7 - 0.34) / (1 - 0.34) = 6/11
    m = confusion(ref, pred)
    assert m.tolist() == [[2, 1, 0], [0, 3, 1], [1, 0, 2]]
    assert cohen_kappa(m) == pytest.approx(6 / 11)

    table = pd.DataFrame({"utterance_id": [f"u{i}" for i in range(12)], "conversation_id": "c", "turn": range(12),
                          "split": "test", "text": [f"t{i}" for i in range(12)], "label": "",
                          "sentiment": ref + ["", P]})
    manifest = Manifest("hand", ("x",), table)
    store = LabelStore(tmp_path / "labels.sqlite")
    store_labels(store, manifest, "teacher-a", pred + [N, "mixed"])
    store_labels(store, manifest, "teacher-b", ref[:8] + [None, "I think positive", None, None])
    result = agreement_table(manifest, store)
    a, b = result.rows
    assert result.reference == "gold sentiment column"
    # teacher a: 11 reference rows (the one without sentiment is ignored), 10 compared, 1 invalid
    assert (a.teacher, a.reference_n, a.compared_n, a.unusable) == ("teacher-a", 11, 10, {"invalid": 1})
    assert a.overlap == pytest.approx(70.0) and a.overlap_all == pytest.approx(700 / 11)
    assert a.kappa == pytest.approx(6 / 11) and a.confusion == m.tolist()
    # teacher b: agrees on its 8 answers; 1 invalid, 2 never labelled
    assert (b.compared_n, b.unusable, b.overlap) == (8, {"invalid": 1, "missing": 2}, 100.0)
    assert b.overlap_all == pytest.approx(800 / 11)
    md = result.to_markdown()
    assert "| teacher-a | p0 | 11 | 10 | 70.0 | 63.6 | 0.545 | invalid 1 |" in md
    assert "| negative | 2 | 1 | 0 |" in md
    d = json.loads(json.dumps(result.to_dict()))
    assert d["classes"] == list(SENTIMENTS) and d["teachers"][0]["confusion"] == m.tolist()


def test_kappa_matches_sklearn():
    rng = np.random.default_rng(0)
    for _ in range(20):
        ref = rng.choice(SENTIMENTS, size=200, p=[0.3, 0.5, 0.2])
        noisy = np.where(rng.random(200) < 0.6, ref, rng.choice(SENTIMENTS, size=200))
        m = confusion(ref, noisy)
        assert np.array_equal(m, sk_confusion(ref, noisy, labels=list(SENTIMENTS)))
        assert cohen_kappa(m) == pytest.approx(cohen_kappa_score(ref, noisy))
    assert math.isnan(cohen_kappa(np.zeros((3, 3))))
    assert math.isnan(cohen_kappa(confusion([U, U], [U, U])))  # chance agreement is 1: undefined


def test_valence_thresholds():
    v = [1.0, 3.49, 3.5, 4.0, 4.5, 4.51, 7.0, float("nan")]
    assert list(valence_to_sentiment(v)) == [N, N, U, U, U, P, P, ""]
    assert list(valence_to_sentiment(v, negative_below=4, positive_above=4)) == [N, N, N, U, P, P, P, ""]


EMOTION_TO_SENTIMENT = {"happiness": P, "neutral": U, "anger": N, "sadness": N, "fear": N, "disgust": N,
                        "contempt": N, "surprise": "surprise"}  # surprise has no sentiment: an invalid answer


def test_agreement_against_msp_podcast_valence(tmp_path):
    path = shared("msp_format", "labels_consensus.csv")
    manifest = prepare("msp_podcast", path.parent, label_map="all")
    store = LabelStore(tmp_path / "labels.sqlite")
    # A stand-in teacher: the categorical consensus read as sentiment (no audio or text in this fixture).
    store_labels(store, manifest, "emoclass", manifest.table["label"].map(EMOTION_TO_SENTIMENT))
    result = agreement_table(manifest, store)  # auto: MSP-Podcast has valence, no sentiment column
    (row,) = result.rows
    assert result.reference == "valence < 3.5 negative, > 4.5 positive, else neutral"

    # the same figures computed independently from the raw release file
    raw = pd.read_csv(path)
    raw = raw[~raw["EmoClass"].isin(["O", "X"])]  # what label_map="all" leaves out
    ref = np.select([raw["EmoVal"] < 3.5, raw["EmoVal"] > 4.5], [N, P], U)
    codes = {"H": P, "N": U, "A": N, "S": N, "F": N, "D": N, "C": N}
    teacher = raw["EmoClass"].map(codes)
    usable = teacher.notna().to_numpy()
    assert row.reference_n == len(raw) == 4464
    assert row.unusable == {"invalid": int((raw["EmoClass"] == "U").sum())} == {"invalid": 33}
    assert row.compared_n == usable.sum()
    assert np.array_equal(row.confusion, sk_confusion(ref[usable], teacher[usable], labels=list(SENTIMENTS)))
    assert row.kappa == pytest.approx(cohen_kappa_score(ref[usable], teacher[usable]))
    assert row.overlap == pytest.approx(100 * (ref[usable] == teacher[usable]).mean())
    with pytest.raises(DataError, match="no gold sentiment"):
        agreement_table(manifest, store, reference="sentiment")


def test_teach_and_agreement_commands_on_meld(tmp_path, capsys):
    store, pseudo = tmp_path / "labels.sqlite", tmp_path / "pseudo"
    args = ["data.max_conversations=2", f"store={store}", "splits=[train, test]"]
    assert main(["-q", "teach", "teach-vader", *args, f"export={pseudo}"]) == 0
    out = capsys.readouterr().out
    assert "vader on meld" in out and "0 already stored" in out
    assert main(["-q", "teach", "teacher=vader", *args[1:] + ["data.max_conversations=2"]]) == 0  # no profile
    assert "already stored, 0 of 0 answered" in capsys.readouterr().out
    exported = Manifest.load(pseudo)
    assert exported.labels == SENTIMENTS and set(exported.table["split"]) == {"train", "test"}

    assert main(["-q", "agreement", "teach-vader", *args, "--json", str(tmp_path / "a.json")]) == 0
    out = capsys.readouterr().out
    assert "reference: gold sentiment column" in out and "| vader |" in out
    row = json.loads((tmp_path / "a.json").read_text())["teachers"][0]
    meld = prepare("meld").subset(2).table
    assert row["reference_n"] == meld["split"].isin(["train", "test"]).sum() == row["compared_n"]

    assert main(["-q", "agreement", "teach-vader", *args, "--teacher", "nobody"]) == 2
    assert "holds no labels" in capsys.readouterr().err
