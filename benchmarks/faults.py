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
- ``merits predict --online`` on one 2,000-turn conversation with a causal run: ``online_2000_turns_seconds``.
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

    assert merits("-q", "train", "offline", *SMALL, f"runs_dir={tmp / 'whole'}", "name=k").returncode == 0
    identical = 0
    for point in KILL_POINTS:
        runs = tmp / point
        killed = merits("-q", "train", "offline", *SMALL, f"runs_dir={runs}", "name=k", env={"MERITS_KILL_AT": point})
        resumed = merits("-q", "train", "offline", *SMALL, f"runs_dir={runs}", "name=k")
        same = killed.returncode == 137 and resumed.returncode == 0 and all(
            _scores(tmp / "whole" / "k" / s) == _scores(runs / "k" / s) for s in ("stage1_text", "stage2_text"))
        identical += same
        print("kill point", point, "resumed identical" if same else "DIFFERENT", flush=True)
    return {"kill_points_tried": len(KILL_POINTS), "kill_points_resumed_identical": identical}


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


def main() -> None:
    figures = {}
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        for part in (kill_points, concurrent_train, concurrent_teach, dead_endpoint, bad_inputs, secrets, online_long):
            where = tmp / {"kill_points": "kills"}.get(part.__name__, part.__name__)
            where.mkdir(parents=True, exist_ok=True)
            started = time.perf_counter()
            figures.update(part(where))
            print(part.__name__, f"{time.perf_counter() - started:.0f} s", flush=True)
    write_result("faults", figures)
    print(json.dumps({k: v for k, v in figures.items() if not isinstance(v, dict)}, indent=2))


if __name__ == "__main__":
    main()
