"""Word error rate: hand-computed cases for each edit type, normalisation, corpus-level pooling."""

import pytest

from merits.errors import DataError
from merits.asr.wer import Normalizer, align, read_texts, score_by_id, wer, word_error_rate


def test_identical_is_zero():
    assert wer("the quick brown fox", "the quick brown fox") == 0.0


def test_substitution():
    a = align("the quick brown fox".split(), "the quick red fox".split())
    assert (a.substitutions, a.deletions, a.insertions, a.hits) == (1, 0, 0, 3)
    assert wer("the quick brown fox", "the quick red fox") == pytest.approx(1 / 4)


def test_deletion():
    a = align("the quick brown fox".split(), "the brown fox".split())
    assert (a.substitutions, a.deletions, a.insertions) == (0, 1, 0)
    assert wer("the quick brown fox", "the brown fox") == pytest.approx(1 / 4)


def test_insertion_can_exceed_one():
    a = align("hello".split(), "oh hello there friend".split())
    assert (a.substitutions, a.deletions, a.insertions) == (0, 0, 3)
    assert wer("hello", "oh hello there friend") == pytest.approx(3.0)


def test_mixed_edits():
    # ref: a b c d e f ; hyp: a x c e f g  -> b->x (S), d deleted (D), g inserted (I); every other path costs 4
    a = align("a b c d e f".split(), "a x c e f g".split())
    assert (a.substitutions, a.deletions, a.insertions, a.hits) == (1, 1, 1, 4)
    assert wer("a b c d e f", "a x c e f g") == pytest.approx(3 / 6)


def test_empty_reference_and_hypothesis():
    assert wer("", "") is None                       # undefined, not 0 or a crash
    assert wer("", "spurious words") is None
    assert wer("two words", "") == pytest.approx(1.0)  # all deleted
    total = word_error_rate(["", "one two"], ["extra", "one two"])
    assert total.insertions == 1 and total.ref_words == 2 and total.wer == pytest.approx(0.5)  # insertions still count
    assert [u.wer for u in total.utterances] == [None, 0.0]
    assert word_error_rate([""], [""]).wer is None


def test_normalisation_default_and_configurable():
    assert wer("Hello, World! Don't stop.", "hello world dont stop") == 0.0
    assert wer("well-known", "well known") == 0.0
    assert wer("Hello world", "hello world", Normalizer(lowercase=False)) == pytest.approx(0.5)
    assert wer("hello, world", "hello world", Normalizer(strip_punctuation=False)) == pytest.approx(0.5)


def test_corpus_wer_pools_edits_not_rates():
    # utterance 1: 1 error in 1 word (WER 1.0); utterance 2: 0 errors in 9 words -> corpus 1/10, not mean 0.5
    total = word_error_rate(["a", "b c d e f g h i j"], ["x", "b c d e f g h i j"], ids=["u1", "u2"])
    assert total.wer == pytest.approx(0.1)
    assert [(u.utterance_id, u.wer) for u in total.utterances] == [("u1", 1.0), ("u2", 0.0)]
    d = total.to_dict()
    assert d["errors"] == 1 and d["ref_words"] == 10 and len(d["per_utterance"]) == 2


def test_mismatched_lengths_fail():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        word_error_rate(["a", "b"], ["a"])


def test_score_by_id_counts_missing_hypotheses_as_deletions(tmp_path):
    score, missing = score_by_id({"u1": "a b", "u2": "c d"}, {"u1": "a b"})
    assert missing == ["u2"] and score.deletions == 2 and score.wer == pytest.approx(0.5)
    (tmp_path / "h.csv").write_text("utterance_id,text\nu1,a b\n")
    assert read_texts(tmp_path / "h.csv") == {"u1": "a b"}
    (tmp_path / "bad.csv").write_text("id,text\nu1,a\n")
    with pytest.raises(DataError, match="missing columns"):
        read_texts(tmp_path / "bad.csv")
