"""Faults a careful user meets, injected on purpose, counted (``benchmarks/results/faults.json``).

    python benchmarks/faults.py

- kills at every named kill point (merits.faults.KILL_POINTS) of a small MELD run, each rerun compared with an
  uninterrupted run: ``kill_points_tried``, ``kill_points_resumed_identical``;
- two ``merits train`` processes on one experiment a few seconds apart, the second with another Stage I learning
  rate; then ``merits predict`` on the run's own test split against the run's recorded test scores:
  ``concurrent_train_corruptions`` (stages whose checkpoint does not reproduce their recorded scores);
- two ``merits teach`` runs at once on one store against a local chat server: ``concurrent_teach_repeated_requests``;
- the shipped ``teach-openai`` profile against an endpoint where nothing listens: ``dead_endpoint_seconds_to_stop``;
- a list of bad inputs through the CLI: ``bad_inputs_tried``, ``bad_inputs_named_error`` (exit 2, ``error: ...``,
  no traceback);
- a key and a credentialed URL through every teach path, then every file and output scanned:
  ``secrets_found_in_outputs``;
- ``merits predict --online`` on one 2,000-turn conversation with a causal run: ``online_2000_turns_seconds``;
- (issue 25) two ``merits teach`` runs on one store, one naming it through a symlink, and two custom corpora whose files
  share a stem labelled one after the other and then the first again: ``paid_twice_cases_tried``,
  ``paid_twice_requests`` (requests beyond one per distinct text and teacher); ``merits teach export=`` its own input
  and ``merits predict --out`` inside a run: ``inputs_overwritten``; the bad overrides of the probe:
  ``tracebacks`` (over every bad input, old and new); hostile requests to a ``merits serve`` with keys:
  ``serve_hostile_cases_tried``, ``serve_unauthorised_accepted``; formula-like transcripts through ``merits predict``:
  ``csv_formula_cells_unescaped``; the work a kill loses: ``work_lost_seconds_max`` (killed + resumed wall time minus
  the uninterrupted run's, over the kill points: process start-up included).

    python benchmarks/faults.py [--parts kill_points,paid_twice,...]   # default: every part; keys of other parts kept
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import PROJECT, write_result  # noqa: E402

sys.path.insert(0, str(PROJECT / "tests"))
PY = sys.executable
ENV = {**os.environ, "MERITS_QUIET": "1", "OMP_NUM_THREADS": "2"}
SMALL = ["data.max_conversations=3", "data.options.strict_counts=false", "stage1_text.epochs=1", "stage2_text.epochs=2",
         "seeds=[0]"]


def merits(*args, env=None, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "merits", *args], env={**ENV, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout)


def kill_points(tmp: Path) -> dict:
    from merits.faults import KILL_POINTS

    # Stage I text with 2 epochs of 2-utterance batches: the epoch checkpoint and (MERITS_CHECKPOINT_SECONDS=0) the
    # checkpoints inside an epoch are reached, so a kill lands mid-epoch of Stage I and of Stage II
    small = [*SMALL, "stage1_text.epochs=2", "stage1_text.batch_size=2"]
    # inside a Stage II epoch: 12 one-conversation steps, so its first epoch saves after step 10 (the loop looks at
    # the clock every 10 steps), after Stage I's one save (2 epochs of 2 steps, no save inside them)
    stage2 = ["data.max_conversations=12", "data.options.strict_counts=false", "stage1_text.epochs=2",
              "stage1_text.batch_size=64", "stage2_text.epochs=2", "stage2_text.batch_size=1", "seeds=[0]"]
    whole = {}
    for key, args in (("small", small), ("stage2", stage2)):
        started = time.perf_counter()
        assert merits("-q", "train", "offline", *args, f"runs_dir={tmp / ('whole-' + key)}", "name=k").returncode == 0
        whole[key] = time.perf_counter() - started
    identical, lost, tried = 0, {}, []
    points = [p for p in KILL_POINTS if p not in ("steps.checkpointed", "pseudolabel.worker_batch")]  # CARE / Ray's
    # the 2nd epoch checkpoint of the run is Stage II's (Stage I, 2 epochs, saves once): a kill mid-Stage II
    every = {"MERITS_CHECKPOINT_SECONDS": "0"}  # inside an epoch, save at every look at the clock
    cases = [(p, {}, p, "small") for p in points] + [
        ("trainer.epoch_saved", every, "trainer.epoch_saved (inside a Stage I epoch)", "small"),
        ("trainer.epoch_saved@2", {}, "trainer.epoch_saved (after a Stage II epoch)", "small"),
        ("trainer.epoch_saved@2", every, "trainer.epoch_saved (inside a Stage II epoch)", "stage2")]
    for point, extra, name, key in cases:
        runs, args = tmp / name.replace(" ", "_"), {"small": small, "stage2": stage2}[key]
        started = time.perf_counter()
        killed = merits("-q", "train", "offline", *args, f"runs_dir={runs}", "name=k",
                        env={"MERITS_KILL_AT": point, **extra})
        resumed = merits("train", "offline", *args, f"runs_dir={runs}", "name=k", env={**extra, "MERITS_QUIET": ""})
        lost[name] = time.perf_counter() - started - whole[key]
        same = killed.returncode == 137 and resumed.returncode == 0 and all(
            _scores(tmp / f"whole-{key}" / "k" / s) == _scores(runs / "k" / s) for s in ("stage1_text", "stage2_text"))
        if "inside a Stage II" in name:  # the resume really began inside Stage II's first epoch
            same = same and "in epoch 1 after 10 of its 12 steps" in resumed.stderr
        identical += same
        tried.append(name)
        print("kill point", name, "resumed identical" if same else "DIFFERENT", flush=True)
    # during pretraining (merits pretrain, 2 epochs): killed after its first epoch, resumed to the same encoder
    from conftest import tiny_bert
    from test_pretrain import unlabelled_meld, vader_labels, with_labels

    m = unlabelled_meld(40)
    with_labels(m, vader_labels(m.table["text"])).save(tmp / "labelled")
    tiny = tiny_bert(tmp / "tiny")
    args = ["-q", "pretrain", str(tmp / "labelled"), f"text_encoder.model={tiny}", "train.epochs=2", "device=cpu"]
    merits(*args, "--out", str(tmp / "ft-whole"))
    killed = merits(*args, "--out", str(tmp / "ft-killed"), env={"MERITS_KILL_AT": "trainer.epoch_saved"})
    resumed = merits(*args, "--out", str(tmp / "ft-killed"))
    a, b = (json.loads((tmp / d / "metrics.json").read_text())["validation"] for d in ("ft-whole", "ft-killed"))
    same = killed.returncode == 137 and resumed.returncode == 0 and a == b
    identical += same
    tried.append("trainer.epoch_saved (pretraining)")
    print("kill point pretraining", "resumed identical" if same else "DIFFERENT", flush=True)
    return {"kill_points_tried": len(tried), "kill_points_resumed_identical": identical, "kill_points": tried,
            "uninterrupted_seconds": whole["small"], "work_lost_seconds": lost, "work_lost_seconds_max": max(lost.values()),
            "checkpoint_seconds_default": 600}


def _scores(stage_dir: Path) -> dict:
    m = json.loads((stage_dir / "seed-0" / "metrics.json").read_text())
    return {s: m[s] for s in ("train", "validation", "test")}


def concurrent_train(tmp: Path) -> dict:
    args = ["-q", "train", "offline", *SMALL, f"runs_dir={tmp / 'runs'}", "name=c"]
    first = subprocess.Popen([PY, "-m", "merits", *args], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(3)
    second = subprocess.Popen([PY, "-m", "merits", *args, "stage1_text.lr=1e-4"], env=ENV, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    codes = [p.wait(timeout=900) for p in (first, second)]
    run = tmp / "runs" / "c"
    test = tmp / "test.csv"
    from merits.data.manifest import Manifest

    Manifest.load(run / "manifest").split("test").to_csv(test, index=False)
    predicted = merits("-q", "predict", str(run), str(test), "--out", str(tmp / "pred"))
    corrupt = 0
    if predicted.returncode == 0:
        scores = json.loads((tmp / "pred" / "summary.json").read_text())["scores"]
        for stage in ("stage1_text", "stage2_text"):
            recorded = json.loads((run / stage / "seed-0" / "metrics.json").read_text())["test"]["weighted_f1"]
            corrupt += abs(scores[stage]["test"]["weighted_f1"] - recorded) > 1e-6
    else:
        corrupt = 2
    return {"concurrent_train_exit_codes": codes, "concurrent_train_corruptions": int(corrupt)}


def concurrent_teach(tmp: Path) -> dict:
    from mock_chat_server import MockChatServer

    data = tmp / "texts.csv"
    pd.DataFrame({"conversation_id": [f"c{i}" for i in range(200)], "text": [f"a good day number {i}" for i in range(200)],
                  "split": "train"}).to_csv(data, index=False)
    with MockChatServer(delay_s=0.02) as server:
        args = ["-q", "teach", "teach-openai", "data.corpus=custom", f"data.root={data}", f"chat.base_url={server.url}",
                "chat.api_key_env=null", "splits=[train]", f"store={tmp / 'labels.sqlite'}", "export=null"]
        procs = [subprocess.Popen([PY, "-m", "merits", *args], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  text=True) for _ in range(2)]
        codes = [p.wait(timeout=300) for p in procs]
        requests = len(server.requests)
    return {"concurrent_teach_exit_codes": codes, "concurrent_teach_requests": requests,
            "concurrent_teach_texts": 200, "concurrent_teach_repeated_requests": requests - 200}


def dead_endpoint(tmp: Path) -> dict:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = tmp / "dead.csv"
    pd.DataFrame({"conversation_id": [f"c{i}" for i in range(16)], "text": [f"day {i}" for i in range(16)],
                  "split": "train"}).to_csv(data, index=False)
    started = time.perf_counter()
    r = merits("-q", "teach", "teach-openai", "data.corpus=custom", f"data.root={data}",
               f"chat.base_url=http://127.0.0.1:{port}/v1", "chat.api_key_env=null", "splits=[train]",
               f"store={tmp / 'dead.sqlite'}", "export=null")
    took = time.perf_counter() - started
    return {"dead_endpoint_seconds_to_stop": took, "dead_endpoint_exit_code": r.returncode,
            "dead_endpoint_message": r.stderr.strip().splitlines()[-1][:300]}


def bad_inputs(tmp: Path) -> dict:
    """(name, argv) pairs; each must exit 2 with one `error: ...` line and no traceback."""
    csv = "conversation_id,turn,split,text,label\nc1,0,train,Café – sí,joy\nc1,1,train,fine,neutral\n"
    (tmp / "cp1252.csv").write_bytes(csv.encode("cp1252"))
    (tmp / "nul.csv").write_text(csv.replace("neutral", "neutral\x00"))
    wav = tmp / "cut.wav"
    sf.write(wav, np.zeros(32000, np.float32), 16000, subtype="PCM_16")
    wav.write_bytes(wav.read_bytes()[:44 + 21333])
    pd.DataFrame({"conversation_id": ["c"], "turn": [0], "split": "train", "text": [""], "audio_path": [str(wav)],
                  "label": ["x"]}).to_csv(tmp / "audio.csv", index=False)
    run = tmp.parent / "kills" / "whole" / "k"  # the finished run of kill_points()
    broken = tmp / "broken"
    shutil.copytree(run, broken)
    ckpt = broken / "stage2_text" / "seed-0" / "checkpoint"
    (ckpt / "model.safetensors").write_bytes((ckpt / "model.safetensors").read_bytes()[:100])
    edited = tmp / "edited"
    shutil.copytree(run, edited)
    (edited / "stage2_text" / "seed-0" / "checkpoint" / "model_config.json").write_text('{"class": "Conv')
    emb = tmp / "emb"
    shutil.copytree(run, emb)
    (emb / "stage1_text" / "seed-0" / "embeddings.safetensors").write_bytes(b"\x00" * 20)
    new = tmp / "new.csv"
    pd.DataFrame({"conversation_id": ["a"], "text": ["hello"]}).to_csv(new, index=False)
    texts = tmp / "texts.csv"
    pd.DataFrame({"conversation_id": ["a"], "text": ["hello"], "split": ["train"]}).to_csv(texts, index=False)
    reordered = tmp / "reordered"
    shutil.copytree(run, reordered)
    m = json.loads((reordered / "manifest" / "manifest.json").read_text())
    m["labels"] = m["labels"][::-1]
    (reordered / "manifest" / "manifest.json").write_text(json.dumps(m))
    cases = {
        "cp1252 CSV": ["prepare", "custom", "--root", str(tmp / "cp1252.csv")],
        "NUL byte in a label": ["prepare", "custom", "--root", str(tmp / "nul.csv")],
        "truncated WAV": ["asr", "custom", "--root", str(tmp / "audio.csv"), "--out", str(tmp / "asr-out")],
        "wrong data root": ["prepare", "meld", "--root", str(tmp / "nowhere")],
        "unknown config key": ["train", "offline", "stage1_text.epochz=1"],
        "truncated checkpoint": ["predict", str(broken), str(new), "--out", str(tmp / "p1")],
        "edited model_config.json": ["predict", str(edited), str(new), "--out", str(tmp / "p2")],
        "reordered labels in the run's manifest": ["predict", str(reordered), str(new), "--out", str(tmp / "p3")],
        "not a run directory": ["predict", str(tmp), str(new), "--out", str(tmp / "p4")],
        "API key with a newline": ["teach", "teach-openai", "data.corpus=custom", f"data.root={texts}",
                                   "chat.api_key_env=MERITS_FAULTS_KEY", "splits=[train]", f"store={tmp / 'k.sqlite'}"],
        "credentialed URL and a key": ["teach", "teach-openai", "data.corpus=custom", f"data.root={texts}",
                                       "chat.base_url=http://user:pw@127.0.0.1:1/v1", "chat.api_key_env=PATH",
                                       "splits=[train]", f"store={tmp / 'k.sqlite'}"],
    }
    named, failures = 0, {}
    for name, argv in cases.items():
        r = merits("-q", *argv, env={"MERITS_FAULTS_KEY": "sk-line\nbreak"})
        ok = r.returncode == 2 and r.stderr.lstrip().startswith("error: ") and "Traceback" not in r.stderr
        named += ok
        if not ok:
            failures[name] = {"rc": r.returncode, "stderr": r.stderr[-400:]}
        print(f"bad input {name}: {'named error' if ok else 'NOT NAMED'}", flush=True)
    # a truncated embeddings file is found by the stage cache: the stage is recomputed (no error, no wrong result)
    r = merits("-q", "train", "offline", *SMALL, f"runs_dir={tmp}", "name=emb")
    recomputed = r.returncode == 0 and (emb / "stage1_text" / "seed-0" / "embeddings.safetensors").stat().st_size > 20
    return {"bad_inputs_tried": len(cases), "bad_inputs_named_error": named, "bad_inputs_not_named": failures,
            "truncated_embeddings_recomputed": bool(recomputed)}


def secrets(tmp: Path) -> dict:
    from mock_chat_server import MockChatServer

    key, password = "sk-faults-SECRET-9876", "pw-SECRET-5432"
    data = tmp / "s.csv"
    pd.DataFrame({"conversation_id": ["a", "b"], "text": ["a good day", "a bad day"], "split": "train"}).to_csv(data, index=False)
    outputs = []
    with MockChatServer(api_key=key) as server:
        host = server.url.split("://", 1)[1]
        runs = [  # right key, wrong key, credentials in the URL, a dead credentialed URL
            (["chat.api_key_env=MERITS_SECRET_KEY", f"chat.base_url={server.url}"], {"MERITS_SECRET_KEY": key}),
            (["chat.api_key_env=MERITS_SECRET_KEY", f"chat.base_url={server.url}"], {"MERITS_SECRET_KEY": key[::-1]}),
            (["chat.api_key_env=null", f"chat.base_url=http://user:{password}@{host}"], {}),
            (["chat.api_key_env=null", f"chat.base_url=http://user:{password}@127.0.0.1:1/v1"], {}),
        ]
        for overrides, env in runs:
            r = merits("teach", "teach-openai", "data.corpus=custom", f"data.root={data}", "splits=[train]",
                       f"store={tmp / 'secret.sqlite'}", f"export={tmp / 'export'}", *overrides, env=env)
            outputs += [r.stdout, r.stderr]
    found = sum(s in text for text in outputs for s in (key, key[::-1], password))
    for f in tmp.rglob("*"):
        if f.is_file():
            content = f.read_bytes()
            found += sum(s.encode() in content for s in (key, key[::-1], password))
    return {"secrets_found_in_outputs": int(found)}


def online_long(tmp: Path) -> dict:
    r = merits("-q", "train", "offline", *SMALL, "stage2_text.model.causal=true", f"runs_dir={tmp}", "name=causal")
    assert r.returncode == 0, r.stderr[-2000:]
    from merits.data import prepare

    texts = prepare("meld").table["text"].head(2000).tolist()
    calls = tmp / "long.csv"
    pd.DataFrame({"conversation_id": "call", "turn": range(2000), "text": texts}).to_csv(calls, index=False)
    started = time.perf_counter()
    r = merits("-q", "predict", str(tmp / "causal"), str(calls), "--online", "--out", str(tmp / "pred"))
    took = time.perf_counter() - started
    assert r.returncode == 0, r.stderr[-2000:]
    summary = json.loads((tmp / "pred" / "summary.json").read_text())
    started = time.perf_counter()
    r = merits("-q", "predict", str(tmp / "causal"), str(calls), "--out", str(tmp / "pred-offline"))
    offline = time.perf_counter() - started
    return {"online_2000_turns_seconds": took, "offline_2000_turns_seconds": offline,
            "online_2000_turns_mode": summary["online_mode"]}


def paid_twice(tmp: Path) -> dict:
    """The probe's two ways to pay twice: one store through a symlink, two corpora whose files share a stem."""
    from mock_chat_server import MockChatServer

    n = 100
    data = tmp / "texts.csv"
    pd.DataFrame({"conversation_id": [f"c{i}" for i in range(n)], "text": [f"a fine day number {i}" for i in range(n)],
                  "split": "train"}).to_csv(data, index=False)
    (tmp / "alias.sqlite").symlink_to(tmp / "labels.sqlite")
    cases = {}
    with MockChatServer(delay_s=0.02) as server:
        def teach(root, store, *extra):
            return subprocess.Popen([PY, "-m", "merits", "-q", "teach", "teach-openai", "data.corpus=custom",
                                     f"data.root={root}", f"chat.base_url={server.url}", "chat.api_key_env=null",
                                     "splits=[train]", f"store={store}", "export=null", *extra], env=ENV,
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        procs = [teach(data, tmp / "labels.sqlite"), teach(data, tmp / "alias.sqlite")]
        [p.wait(timeout=300) for p in procs]
        cases["one store, one name a symlink"] = len(server.requests) - n
        # two corpora named alike (a/calls.csv, b/calls.csv): B under A's name is refused, B under its own name is
        # labelled, then A again asks nothing
        first, clash = len(server.requests), {}
        for folder, word, extra in (("a", "sunny", ()), ("b", "rainy", ()), ("b", "rainy", ("data.options.name=calls_b",)),
                                    ("a", "sunny", ())):
            (tmp / folder).mkdir(exist_ok=True)
            pd.DataFrame({"conversation_id": [f"c{i}" for i in range(n)], "text": [f"a {word} day {i}" for i in range(n)],
                          "split": "train"}).to_csv(tmp / folder / "calls.csv", index=False)
            proc = teach(tmp / folder / "calls.csv", tmp / "stems.sqlite", *extra)
            out, err = proc.communicate(timeout=300)
            if folder == "b" and not extra:
                clash = {"exit_code": proc.returncode, "message": err.strip().splitlines()[-1] if err.strip() else ""}
        cases["two corpora sharing a file stem, then the first again"] = len(server.requests) - first - 2 * n
    return {"paid_twice_cases_tried": len(cases), "paid_twice_requests": int(sum(cases.values())),
            "paid_twice": cases, "corpus_name_clash": clash}


def overwritten(tmp: Path) -> dict:
    """Commands pointed at their own input or into a trained run: how many files they changed."""
    from merits.data import prepare

    src = tmp / "m"
    prepare("meld").subset(2).save(src)
    run = tmp.parent / "kills" / "whole" / "k"
    if not run.is_dir():
        assert merits("-q", "train", "offline", *SMALL, f"runs_dir={tmp.parent / 'kills' / 'whole'}", "name=k").returncode == 0
    watched = [*src.rglob("*"), *(run / "stage2_text").rglob("*")]
    before = {f: f.read_bytes() for f in watched if f.is_file()}
    new = tmp / "new.csv"
    pd.DataFrame({"conversation_id": ["a"], "text": ["hello"]}).to_csv(new, index=False)
    codes = [merits("-q", "teach", "teach-vader", f"manifest={src}", f"store={tmp / 's.sqlite'}", f"export={src}").returncode,
             merits("-q", "predict", str(run), str(new), "--out", str(run / "stage2_text" / "seed-0")).returncode]
    changed = sum(1 for f, b in before.items() if not f.is_file() or f.read_bytes() != b)
    return {"inputs_overwritten": changed, "inputs_overwrite_exit_codes": codes}


def bad_overrides(tmp: Path) -> dict:
    """The probe's overrides and options that were tracebacks."""
    (tmp / "ext.yaml").write_text("extends: 5\n")
    cases = {"name=!!python/...": ["train", "offline", 'name=!!python/object/apply:os.system ["true"]'],
             "seeds=[0": ["train", "offline", "seeds=[0"], "threads=-3": ["train", "offline", "threads=-3"],
             "extends: 5": ["train", str(tmp / "ext.yaml")], "prepare -o labels=[a": ["prepare", "meld", "-o", "labels=[a"]}
    tracebacks, failures = 0, {}
    for name, argv in cases.items():
        r = merits("-q", *argv)
        if "Traceback" in r.stderr or r.returncode != 2:
            tracebacks += 1
            failures[name] = r.stderr[-300:]
    return {"bad_overrides_tried": len(cases), "bad_overrides_tracebacks": tracebacks, "bad_overrides_failures": failures}


def serve_hostile(tmp: Path) -> dict:
    """Hostile requests (tests/test_serve_security.py's list) to a service with keys: how many were let in."""
    from fastapi.testclient import TestClient
    from test_serve_security import KEY, hostile_requests

    from merits.serve import ServeConfig, create_app

    run = tmp.parent / "kills" / "whole" / "k"
    if not run.is_dir():
        assert merits("-q", "train", "offline", *SMALL, f"runs_dir={tmp.parent / 'kills' / 'whole'}", "name=k").returncode == 0
    os.environ["MERITS_SERVE_API_KEYS"] = KEY
    try:
        app = create_app(run, ServeConfig(live_store=str(tmp / "live.sqlite"), max_upload_mb=0.01))
        with TestClient(app, base_url="http://localhost") as client:
            got = hostile_requests(client)
    finally:
        os.environ.pop("MERITS_SERVE_API_KEYS")
    return {"serve_hostile_cases_tried": len(got), "serve_unauthorised_accepted": sum(200 <= c < 300 for c in got.values()),
            "serve_hostile_statuses": got}


def csv_formulas(tmp: Path) -> dict:
    """Transcripts a spreadsheet would run, through merits predict: cells left unescaped in its CSVs."""
    run = tmp.parent / "kills" / "whole" / "k"
    if not run.is_dir():
        assert merits("-q", "train", "offline", *SMALL, f"runs_dir={tmp.parent / 'kills' / 'whole'}", "name=k").returncode == 0
    texts = ['=HYPERLINK("http://evil.example","click")', "+1+1", "-2+3", "@SUM(A1:A9)", "\tcmd", "fine"]
    pd.DataFrame({"conversation_id": ["=cmd|' /C calc'!A0"] * len(texts), "text": texts}).to_csv(tmp / "f.csv", index=False)
    assert merits("-q", "predict", str(run), str(tmp / "f.csv"), "--out", str(tmp / "p")).returncode == 0
    unescaped = 0
    for name in ("predictions.csv", "conversations.csv"):
        table = pd.read_csv(tmp / "p" / name, dtype=str, keep_default_na=False)
        unescaped += int(sum(v.startswith(("=", "+", "-", "@", "\t", "\r")) for c in table.columns for v in table[c]))
    return {"csv_formula_cells_tried": len(texts) + 1, "csv_formula_cells_unescaped": unescaped}


PARTS = (kill_points, concurrent_train, concurrent_teach, dead_endpoint, bad_inputs, secrets, online_long, paid_twice,
         overwritten, bad_overrides, serve_hostile, csv_formulas)


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--parts", default=",".join(p.__name__ for p in PARTS))
    chosen = ap.parse_args().parts.split(",")
    path = PROJECT / "benchmarks" / "results" / "faults.json"
    figures = {k: v for k, v in json.loads(path.read_text()).items() if k not in ("command", "date", "machine")} \
        if path.is_file() else {}  # the keys of the parts not run this time are kept
    seconds = figures.get("part_seconds", {})
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        for part in (p for p in PARTS if p.__name__ in chosen):
            where = tmp / {"kill_points": "kills"}.get(part.__name__, part.__name__)
            where.mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            figures.update(part(where))
            seconds[part.__name__] = time.perf_counter() - started
            print(part.__name__, f"{seconds[part.__name__]:.0f} s", flush=True)
    figures["part_seconds"] = seconds
    figures["tracebacks"] = (figures.get("bad_inputs_tried", 0) - figures.get("bad_inputs_named_error", 0)
                             + figures.get("bad_overrides_tracebacks", 0))
    write_result("faults", figures)
    print(json.dumps({k: v for k, v in figures.items() if not isinstance(v, dict)}, indent=2))


if __name__ == "__main__":
    main()
