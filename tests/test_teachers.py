"""Prompt + parser, and the three teacher back-ends: the chat HTTP teacher against a real local server that injects
faults, VADER on known sentences, the packaged SmolLM2 in-process."""

import logging
from pathlib import Path

import pandas as pd
import pytest

from merits.config import load_config
from merits.data.manifest import Manifest
from merits.errors import ConfigError, ModelNotFoundError
from merits.teach import (PAPER_TEMPLATE, ChatTeacher, LabelStore, LocalLMTeacher, Prompt, TeachConfig, TeacherError,
                          VaderTeacher, build_teacher, label_manifest, parse_label, template_hash)
from merits.teach import TEACHERS, ChatTeacherConfig, LocalTeacherConfig, VaderTeacherConfig, register_teacher
from merits.teach.chat import retry_after_seconds
from mock_chat_server import MockChatServer

KEY = "sk-test-SECRET-0123456789"
KEY_ENV = "MERITS_TEST_TEACHER_KEY"
CONFIGS = sorted((Path(__file__).resolve().parents[1] / "src" / "merits" / "configs").glob("teach-*.yaml"))


def manifest_of(texts, corpus="toy") -> Manifest:
    """One conversation, one utterance per text, all in train."""
    table = pd.DataFrame({"utterance_id": [f"u{i}" for i in range(len(texts))], "conversation_id": "c0",
                          "turn": range(len(texts)), "split": "train", "text": texts, "label": ""})
    return Manifest(corpus, ("x",), table)


@pytest.fixture
def server():
    with MockChatServer(delay_s=0.01, api_key=KEY, hang_s=5.0) as s:
        yield s


@pytest.fixture
def key_env(monkeypatch):
    monkeypatch.setenv(KEY_ENV, KEY)


def chat(server, **kw) -> ChatTeacher:
    options = dict(api_key_env=KEY_ENV, concurrency=4, timeout_s=0.5, max_retries=3, backoff_s=0.01,
                   max_backoff_s=5.0)
    return ChatTeacher(server.url, "mock-model", **(options | kw))


# ------------------------------------------------------------------------------------------------ prompt
def test_default_prompt_is_the_papers_verbatim():
    assert PAPER_TEMPLATE == ("You are a sentiment classification bot. Given the [sentence], classify as positive, "
                              "negative or neutral sentiment. Please give the sentiment and no extra text as output.")
    p = Prompt()
    assert p.render("I am happy") == PAPER_TEMPLATE.replace("[sentence]", "I am happy")
    assert p.messages("x") == [{"role": "user", "content": PAPER_TEMPLATE.replace("[sentence]", "x")}]
    assert Prompt(system="be brief").messages("x")[0] == {"role": "system", "content": "be brief"}
    assert p.hash() == template_hash() == template_hash(PAPER_TEMPLATE, None)
    assert len({p.hash(), Prompt("Rate: [sentence]").hash(), Prompt(system="s").hash()}) == 3
    with pytest.raises(ConfigError, match=r"\[sentence\]"):
        Prompt("no placeholder here")


@pytest.mark.parametrize("answer,label", [
    ("Positive.", "positive"), (" NEGATIVE\n", "negative"), ("neutral!", "neutral"), ("positive", "positive"),
    ('"Neutral"', "neutral"), ("**Negative**", "negative"), ("“Positive”", "positive"),
    ("I think it is positive", None), ("mixed", None), ("", None), (None, None), ("positive negative", None),
    ("pos", None), ("Positive sentiment", None), ("neu-tral", None),
])
def test_parser_is_strict(answer, label):
    assert parse_label(answer) == label


# ------------------------------------------------------------------------------------------------ chat HTTP
def test_chat_teacher_retries_honours_retry_after_and_stores_invalids(server, key_env, tmp_path, caplog):
    texts = ["a good day", "a bad day", "a plain day", "good [429]", "bad [500]", "plain [hang]", "[malformed]",
             "[chatty] good"]
    caplog.set_level(logging.DEBUG)
    teacher = chat(server)
    store = LabelStore(tmp_path / "labels.sqlite")
    run = label_manifest(manifest_of(texts), teacher, store, show_progress=False)
    rows = store.table("toy").set_index("utterance_id")

    assert list(rows.loc[[f"u{i}" for i in range(6)], "label"]) == ["positive", "negative", "neutral"] * 2
    assert (rows.loc[[f"u{i}" for i in range(6)], "status"] == "ok").all()
    # a malformed body is deterministic: refused, and not paid for again by a rerun unless asked (retry_refused)
    assert rows.loc["u6", "status"] == "refused" and rows.loc["u6", "raw"].startswith("malformed response")
    assert rows.loc["u7", "status"] == "invalid" and rows.loc["u7", "raw"] == "I think it is positive"
    assert pd.isna(rows.loc["u7", "label"])  # NULL in the store
    assert run.counts == {"ok": 6, "invalid": 1, "refused": 1} and run.invalid_rate == pytest.approx(1 / 7)

    # one retry each for 429, 500 and the hang (timeout); malformed JSON is an item error, not retried
    full = {t: PAPER_TEMPLATE.replace("[sentence]", t) for t in texts}
    assert [server.counts[full[t]] for t in texts] == [1, 1, 1, 2, 2, 2, 1, 1]
    assert rows.loc["u3", "attempts"] == 2 and rows.loc["u0", "attempts"] == 1
    t429 = [r["t"] for r in server.requests if r["text"] == full["good [429]"]]
    assert t429[1] - t429[0] >= 0.95  # Retry-After: 1 honoured (the exponential backoff alone would be ~0.01 s)
    assert rows.loc["u5", "latency_s"] >= 0.5  # waited out the 0.5 s timeout before the retry
    assert all(r["authorization_ok"] for r in server.requests)

    # the key is sent but never kept: not in the database (nor its WAL), the logs, the repr or the answers
    store.close()
    for path in tmp_path.iterdir():
        assert KEY.encode() not in path.read_bytes(), path
    assert "retrying" in caplog.text and KEY not in caplog.text
    assert KEY not in repr(teacher) and KEY not in str(vars(teacher))


def test_refused_key_stops_the_run_without_leaking_it(server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "sk-wrong-KEY-987")
    with pytest.raises(TeacherError, match="401") as e:
        chat(server).label(["a good day"])
    assert "sk-wrong-KEY-987" not in str(e.value) and KEY_ENV in str(e.value)


def test_missing_key_variable_is_a_clear_error(monkeypatch):
    monkeypatch.delenv("MERITS_NO_SUCH_KEY", raising=False)
    with pytest.raises(ConfigError, match="MERITS_NO_SUCH_KEY is not set"):
        ChatTeacher("http://127.0.0.1:9/v1", "m", api_key_env="MERITS_NO_SUCH_KEY")


def test_budget_stops_cleanly_and_the_next_run_continues(server, key_env, tmp_path):
    texts = [f"good {i}" for i in range(10)]
    store = LabelStore(tmp_path / "labels.sqlite")
    run = label_manifest(manifest_of(texts), chat(server, max_requests=4, concurrency=2), store, show_progress=False)
    assert run.stopped and "budget of 4 requests" in run.stopped
    assert run.answered == 4 and len(server.requests) == 4 and len(store.table("toy")) == 4
    assert "rerun to continue" in run.summary()
    asked = set(server.counts)
    run = label_manifest(manifest_of(texts), chat(server), store, show_progress=False)
    assert run.stopped is None and run.already_stored == 4 and run.asked == 6 and run.counts == {"ok": 10}
    assert len(server.requests) == 10 and all(server.counts[t] == 1 for t in asked)  # nothing asked twice


def test_failed_items_are_errors_then_retried_by_the_next_run(server, key_env, tmp_path):
    store = LabelStore(tmp_path / "labels.sqlite")
    m = manifest_of(["bad [500]", "good [429]", "a plain day"])
    run = label_manifest(m, chat(server, max_retries=0, max_backoff_s=0.5), store, show_progress=False)
    rows = store.table("toy").set_index("utterance_id")
    assert rows.loc["u0", "status"] == "error" and "gave up after 1 attempts: HTTP 500" in rows.loc["u0", "raw"]
    assert rows.loc["u1", "status"] == "error" and "HTTP 429" in rows.loc["u1", "raw"]
    assert run.counts == {"error": 2, "ok": 1}
    run = label_manifest(m, chat(server), store, show_progress=False)  # retry_errors: only the two errors
    assert run.asked == 2 and run.counts == {"ok": 3}


def test_retry_after_parsing():
    assert retry_after_seconds("2") == 2.0 and retry_after_seconds("0.5") == 0.5
    assert retry_after_seconds(None) is None and retry_after_seconds("soon") is None
    assert 0 <= retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") < 1e-9  # a date in the past: retry now


# ------------------------------------------------------------------------------------------------ VADER
def test_vader_on_known_sentences():
    teacher = VaderTeacher()
    answers = teacher.label(["I love this, it is wonderful!", "This is terrible and I hate it.",
                             "The meeting is at three.", "The box is on the table."])
    assert [a.label for a in answers] == ["positive", "negative", "neutral", "neutral"]
    assert all(a.status == "ok" and a.raw.startswith("compound=") for a in answers)
    strict = VaderTeacher(positive_threshold=0.99)
    assert strict.label(["I love this, it is wonderful!"])[0].label == "neutral"
    assert strict.prompt_hash != teacher.prompt_hash  # other thresholds never reuse the stored labels


# ------------------------------------------------------------------------------------------------ local LM
def test_local_smollm2_is_deterministic_and_gives_valid_or_invalid_labels():
    teacher = LocalLMTeacher("SmolLM2-135M-Instruct", batch_size=4, max_new_tokens=4, threads=1)
    texts = ["I love this, it is wonderful!", "This is the worst day of my life.", "The meeting is at three.",
             "Oh my God, you're kidding!"]
    seen = []
    first = teacher.label(texts, on_result=lambda i, a: seen.append(i))
    second = teacher.label(texts)
    assert sorted(seen) == [0, 1, 2, 3]
    assert [(a.raw, a.label, a.status) for a in first] == [(a.raw, a.label, a.status) for a in second]
    for a in first:
        assert a.status in ("ok", "invalid") and isinstance(a.raw, str)
        assert (a.status == "ok") == (a.label in ("positive", "negative", "neutral"))
    assert teacher.name == "local:SmolLM2-135M-Instruct"

    # choice decoding: the same model's next-token distribution restricted to the three labels (calibrated)
    choice = LocalLMTeacher("SmolLM2-135M-Instruct", batch_size=4, threads=1, decoding="choice", backend="transformers")
    choice._loaded = teacher._loaded  # the same weights, loaded once for both tests
    answers = choice.label(texts)
    assert choice.name == "local:SmolLM2-135M-Instruct:choice-calibrated" != teacher.name  # its own store key
    assert all(a.status == "ok" and a.label in ("positive", "negative", "neutral") for a in answers)
    assert all("choice;" in a.raw and a.raw.startswith(a.label) for a in answers)
    assert [a.label for a in choice.label(texts)] == [a.label for a in answers]  # deterministic
    # one batch or another gives the same scores (left padding keeps each prompt's last token at the end)
    short = min(range(len(texts)), key=lambda i: len(texts[i]))  # padded in the batch of four
    alone, batched = choice._label_scores([texts[short]])[0], choice._label_scores(texts)[short]
    assert alone.tolist() == pytest.approx(batched.tolist(), abs=1e-3)
    with pytest.raises(ConfigError, match="decoding"):
        LocalLMTeacher(decoding="sample")

    # llama.cpp reads the GGUF as it is (the default for choice on a GGUF): the shared prompt prefix evaluated once,
    # each text after it; the same label scores as transformers' dequantised weights, to quantisation noise
    llama = LocalLMTeacher("SmolLM2-135M-Instruct", threads=1, decoding="choice", spellings="lowercase",
                           calibrate=False)
    assert llama.uses_llama_cpp() and llama.name.endswith(":choice-lowercase")
    fast = llama._label_scores(texts)
    again = llama._label_scores(texts[::-1]).flip(0)  # another order: the kept prefix cache is exact
    assert fast.flatten().tolist() == pytest.approx(again.flatten().tolist(), abs=1e-4)
    fresh = LocalLMTeacher("SmolLM2-135M-Instruct", threads=1, decoding="choice", spellings="lowercase",
                           calibrate=False)
    assert fresh._label_scores(texts[-1:])[0].tolist() == pytest.approx(fast[-1].tolist(), abs=1e-4)
    slow = LocalLMTeacher("SmolLM2-135M-Instruct", threads=1, decoding="choice", spellings="lowercase",
                          calibrate=False, backend="transformers")
    slow._loaded = teacher._loaded
    assert fast.flatten().tolist() == pytest.approx(slow._label_scores(texts).flatten().tolist(), abs=0.5)
    with pytest.raises(ConfigError, match="needs local.decoding=choice"):
        LocalLMTeacher(backend="llama_cpp")


def test_local_teacher_names_a_missing_model(tmp_path):
    with pytest.raises(ModelNotFoundError, match="does not exist"):
        LocalLMTeacher(str(tmp_path / "nothing.gguf")).load()
    with pytest.raises(ModelNotFoundError, match="no-such-org/no-such-model"):
        LocalLMTeacher("no-such-org/no-such-model").load()


# ------------------------------------------------------------------------------------------------ configs
@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_every_shipped_teach_config_is_valid(path):
    cfg = load_config(path, cls=TeachConfig)
    assert cfg.teacher in ("chat", "local", "vader")


def test_teach_config_checks_and_builds(monkeypatch):
    assert {p.stem for p in CONFIGS} >= {"teach-vader", "teach-local", "teach-openai"}
    with pytest.raises(ConfigError, match="teacher"):
        load_config(None, ["teacher=gpt"], cls=TeachConfig)
    with pytest.raises(ConfigError, match="chat.concurrency"):
        load_config(None, ["chat.concurrency=0"], cls=TeachConfig)
    assert isinstance(build_teacher(load_config("teach-vader", cls=TeachConfig)), VaderTeacher)
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    teacher = build_teacher(load_config("teach-openai", ['prompt.template="Sentiment of: [sentence]"'], cls=TeachConfig))
    assert isinstance(teacher, ChatTeacher) and teacher.prompt_hash == template_hash("Sentiment of: [sentence]")
    assert KEY not in repr(teacher)


# ------------------------------------------------------------------------------------------------ registry
def test_the_registry_builds_each_teacher_from_its_config_section():
    assert set(TEACHERS) == {"chat", "local", "vader"}
    sections = {"chat": ChatTeacherConfig, "local": LocalTeacherConfig, "vader": VaderTeacherConfig}
    for name, config in sections.items():
        assert TEACHERS[name].config is config
        assert isinstance(getattr(TeachConfig(), name), config)  # the TeachConfig section of the same name
    cfg = load_config(None, ["teacher=chat", "chat.api_key_env=null", "chat.model=m", "chat.concurrency=3",
                             "prompt.system=be brief"], cls=TeachConfig)
    teacher = build_teacher(cfg)
    assert isinstance(teacher, ChatTeacher) and teacher.cfg is cfg.chat and teacher.name == "chat:m"
    assert teacher.prompt == Prompt(PAPER_TEMPLATE, "be brief")
    local = build_teacher(load_config(None, ["teacher=local", "local.decoding=choice"], cls=TeachConfig))
    assert isinstance(local, LocalLMTeacher) and local.cfg.decoding == "choice" and local._loaded is None  # lazy
    # a teacher built from its fields is the same as one built from its config (one set of defaults and checks)
    assert ChatTeacher("http://x/v1", "m", api_key_env=None).cfg == ChatTeacherConfig("http://x/v1", "m", api_key_env=None)
    with pytest.raises(ConfigError, match="chat.concurrency"):
        ChatTeacher(api_key_env=None, concurrency=0)
    with pytest.raises(ConfigError, match="vader.negative_threshold"):
        VaderTeacher(positive_threshold=-0.5)


def test_a_registered_teacher_is_valid_in_configs_and_built_with_its_defaults(monkeypatch):
    from dataclasses import dataclass

    @dataclass
    class EchoConfig:
        word: str = "neutral"

    class Echo:
        def __init__(self, cfg, prompt):
            self.cfg, self.prompt = cfg, prompt

    monkeypatch.setitem(TEACHERS, "echo", TEACHERS["vader"])  # restored after the test
    register_teacher("echo", EchoConfig, Echo)
    teacher = build_teacher(load_config(None, ["teacher=echo", 'prompt.template="Say: [sentence]"'], cls=TeachConfig))
    assert isinstance(teacher, Echo) and teacher.cfg == EchoConfig()  # no TeachConfig section: the defaults
    assert teacher.prompt.template == "Say: [sentence]"
    with pytest.raises(ConfigError, match="'gpt' is not one of .*'echo'"):
        load_config(None, ["teacher=gpt"], cls=TeachConfig)


# ------------------------------------------------------------------------------------------------ faults (issue 11)
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_dead_endpoint_stops_the_run_quickly_with_the_counts(tmp_path, capsys):
    """Connection refused on every attempt: the circuit breaker stops the run after max_consecutive_failures failed
    attempts over all items, naming the endpoint and what it answered, instead of retrying every item with backoff."""
    import time

    from merits.cli import main

    url = f"http://127.0.0.1:{_free_port()}/v1"  # nothing listens there
    data = tmp_path / "texts.csv"
    pd.DataFrame({"conversation_id": [f"c{i}" for i in range(16)], "text": [f"day {i}" for i in range(16)],
                  "split": "train"}).to_csv(data, index=False)
    started = time.perf_counter()
    rc = main(["-q", "teach", "teach-openai", "data.corpus=custom", f"data.root={data}", f"chat.base_url={url}",
               "chat.api_key_env=null", "splits=[train]", f"store={tmp_path / 's.sqlite'}", "export=null"])
    took = time.perf_counter() - started
    err = capsys.readouterr().err
    assert rc == 2 and took < 10, (rc, took)  # the shipped profile's retries would take minutes (hours at scale)
    assert "failed 8 times in a row" in err and "127.0.0.1" in err and "ClientConnector" in err
    assert "error: " in err and "0 of 16 answered now" in err  # the count summary on this exit path too


def test_refused_requests_are_not_paid_for_again(server, key_env, tmp_path):
    texts = ["a good day", "[malformed]"]
    store = LabelStore(tmp_path / "labels.sqlite")
    first = label_manifest(manifest_of(texts), chat(server), store, show_progress=False)
    assert first.counts == {"ok": 1, "refused": 1}
    sent = len(server.requests)
    again = label_manifest(manifest_of(texts), chat(server), store, show_progress=False)
    assert again.asked == 0 and len(server.requests) == sent  # the deterministic failure is not re-billed
    asked = label_manifest(manifest_of(texts), chat(server), store, show_progress=False, retry_refused=True)
    assert asked.asked == 1 and len(server.requests) == sent + 1


def test_two_teach_runs_on_one_store_never_ask_twice(server, key_env, tmp_path):
    """Two runs started together on one store: the store's lock makes the second wait, then ask only for what the
    first left; every text is requested exactly once."""
    import threading

    texts = [f"a good day {i}" for i in range(30)]
    runs = []

    def one():
        with LabelStore(tmp_path / "labels.sqlite") as store:
            runs.append(label_manifest(manifest_of(texts), chat(server), store, show_progress=False))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(server.requests) == 30 and sorted(r.asked for r in runs) == [0, 30]


def test_urls_and_keys_are_redacted(server, key_env, monkeypatch):
    from merits.secrets import redact_url

    assert redact_url("http://user:secret@host:8000/v1?api_key=abc&x=1") == "http://***@host:8000/v1?api_key=%2A%2A%2A&x=1"
    t = ChatTeacher("http://user:secret@127.0.0.1:1/v1", "m", api_key_env=None, max_consecutive_failures=1, max_retries=0)
    assert "secret" not in repr(t) and "secret" not in t.shown_url
    with pytest.raises(TeacherError) as e:
        t.label(["x"])
    assert "secret" not in str(e.value) and "user" not in str(e.value)
    # a credentialed URL and a key at once, a key with a newline: named errors, not tracebacks
    with pytest.raises(ConfigError, match="carries credentials"):
        ChatTeacher("http://user:secret@host/v1", "m", api_key_env=KEY_ENV)
    monkeypatch.setenv(KEY_ENV, KEY + "\n")
    with pytest.raises(ConfigError, match="contains a newline"):
        ChatTeacher(server.url, "m", api_key_env=KEY_ENV)


def test_refused_key_hint_without_a_key_variable(server):
    t = ChatTeacher(server.url, "m", api_key_env=None)  # the mock server wants a key
    with pytest.raises(TeacherError) as e:
        t.label(["a good day"])
    assert "$None" not in str(e.value) and "chat.api_key_env" in str(e.value)


def test_stores_of_the_earlier_schema_are_migrated(tmp_path):
    import sqlite3

    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(__import__("merits.teach.label_store", fromlist=["SCHEMA"]).SCHEMA.replace(", 'refused'", ""))
    db.execute("INSERT INTO labels VALUES ('toy','u0','t','p','h','Positive','positive','ok',0.1,1,'now')")
    db.commit()
    db.close()
    with LabelStore(path) as store:
        assert store.stored("toy", "t", "p") == {"u0": "h"}
        from merits.teach.base import Answer

        store.put("toy", "u1", "t", "p", "h", Answer.failed("HTTP 400", refused=True))
        assert store.table("toy")["status"].tolist() == ["ok", "refused"]
