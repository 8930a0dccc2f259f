"""A newcomer's first hour, replayed (``benchmarks/results/first_hour.json``): each friction a new user met, as a
command on generated files, checked against what the docs say it does.

    python benchmarks/first_hour.py

Keys: ``cases_tried``, ``cases_as_documented``, ``tracebacks`` (outside the ``--debug`` case, which asks for one),
``cases`` (per case: as documented or not, the exit code, the line that shows it), and the seconds it took.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import PROJECT, write_result

PY = sys.executable
ENV = {**os.environ, "OMP_NUM_THREADS": "2"}


def merits(*args, env=None, timeout=900) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "merits", *args], env={**ENV, **(env or {})}, capture_output=True, text=True,
                          timeout=timeout, cwd=PROJECT)


def line_with(text: str, *words) -> str:
    return next((ln for ln in text.splitlines() if all(w in ln for w in words)), "")


def main() -> None:
    start = time.perf_counter()
    cases: dict[str, dict] = {}
    tracebacks = 0

    def case(name: str, done: subprocess.CompletedProcess, ok: bool, shown: str, traceback_expected: bool = False):
        nonlocal tracebacks
        tracebacks += ("Traceback" in done.stderr) and not traceback_expected
        cases[name] = {"as_documented": bool(ok), "exit_code": done.returncode, "shown": shown[:300]}
        print(("ok   " if ok else "FAIL ") + name, flush=True)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        chat = tmp / "chat.csv"
        chat.write_text("conversation_id,text,label,split\na,hi,Joy,train\na,ho,joy,train\nc,hu,anger,test\n"
                        "b,he,joy,train\n")
        done = merits("prepare", "custom", "--root", str(chat))
        err = done.stderr
        case("prepare: labels that differ only by case (warning with the merging label_map)", done,
             "-o label_map=joy:Joy" in err, line_with(err, "differ only by case"))
        case("prepare: a class without a training example (warning)", done,
             "anger (only in test)" in err, line_with(err, "without a training example"))
        case("prepare: no validation split (error: train would stop)", done,
             done.returncode == 2 and "merits train would stop here" in err, line_with(err, "validation"))
        empty = tmp / "empty.csv"
        empty.write_text("")
        done = merits("prepare", "custom", "--root", str(empty))
        case("prepare: an empty CSV", done, done.returncode == 2 and "holds no rows" in done.stderr,
             line_with(done.stderr, "error"))
        unknown = tmp / "unknown.csv"
        unknown.write_text("conversation_id,text,label,split\n" + "".join(
            f"c{i},t{i},{lab},train\n" for i, lab in enumerate(["joy", "Joy", "meh", "meh", "anger"])))
        done = merits("prepare", "custom", "--root", str(unknown), "-o", "labels=joy,anger")
        case("prepare: unknown labels (distinct labels, counts, a ready label_map)", done,
             "'meh' (2 rows" in done.stderr and "-o label_map=" in done.stderr
             and {"meh:", "Joy:joy"} <= set(line_with(done.stderr, "label_map=").rsplit("label_map=", 1)[-1].split(",")),
             line_with(done.stderr, "error"))
        done = merits("prepare", "costum")
        case("prepare: a misspelt corpus (did you mean)", done, "did you mean 'custom'?" in done.stderr,
             line_with(done.stderr, "error"))
        done = merits("prepare", "custom", "--root", str(empty), "--debug")
        case("--debug after the step shows the traceback", done, "Traceback" in done.stderr,
             line_with(done.stderr, "DataError"), traceback_expected=True)

        # a tiny trained run for the commands that need one
        runs = tmp / "runs"
        small = ["data.max_conversations=6", "data.options.strict_counts=false", "stage1_text.epochs=2",
                 "stage1_text.batch_size=8", "stage2_text.epochs=2", "seeds=[0]", f"runs_dir={runs}", "name=r"]
        killed = merits("-q", "train", "offline", *small, env={"MERITS_KILL_AT": "trainer.epoch_saved"})
        done = merits("train", "offline", *small)
        err = done.stderr
        case("a killed train says what it resumes", done,
             killed.returncode == 137 and done.returncode == 0 and "what it had saved is kept" in err
             and "resuming after epoch 1" in err, line_with(err, "resuming after epoch"))
        run = runs / "r"
        done = merits("predict", str(run), str(empty), "--out", str(tmp / "p0"))
        case("predict: an empty CSV", done, done.returncode == 2 and "holds no rows" in done.stderr,
             line_with(done.stderr, "error"))
        own = (run / "report.md").read_bytes()
        done = merits("report", str(run), "--metric", "macro_f1")
        case("report --metric leaves the run's own report alone", done,
             done.returncode == 0 and (run / "report.md").read_bytes() == own and (run / "report-macro_f1.md").is_file(),
             line_with(done.stdout, "written beside"))
        import pandas as pd

        m = pd.read_csv(run / "manifest" / "manifest.csv", keep_default_na=False)
        test = m[(m["split"] == "test") & (m["label"] != "") & (m["label"] != "anger")]
        absent = sorted(set(m["label"]) - set(test["label"]) - {""})
        test.to_csv(tmp / "test.csv", index=False)
        done = merits("predict", str(run), str(tmp / "test.csv"), "--out", str(tmp / "p1"))
        summary = json.loads((tmp / "p1" / "summary.json").read_text()) if done.returncode == 0 else {}
        got = summary.get("scores", {}).get("stage2_text", {}).get("test", {}).get("absent_classes")
        case("predict: macro F1 over the classes present, the absent named", done,
             got == absent and "macro F1 is over the" in done.stdout, line_with(done.stdout, "no gold example"))

        # the service: no progress bar per request; the live answer has the documented shape
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {k: v for k, v in ENV.items() if k != "MERITS_QUIET"}
        server = subprocess.Popen([PY, "-m", "merits", "serve", str(run), "--port", str(port)], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=PROJECT)
        try:
            import httpx

            url = f"http://127.0.0.1:{port}"
            deadline = time.time() + 120
            while time.time() < deadline:
                try:
                    if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                        break
                except httpx.HTTPError:
                    time.sleep(0.5)
            for k in range(3):
                httpx.post(f"{url}/v1/predict", json={"conversations": [{"turns": ["Hi there.", "Go away!"]}]},
                           timeout=60)
            live = httpx.post(f"{url}/v1/conversations/call-1/turns", json={"text": "Hi, about my bill."},
                              timeout=60).json()
        finally:
            server.terminate()
            out, err = server.communicate(timeout=30)
        done = subprocess.CompletedProcess(server.args, server.returncode, out, err)
        case("serve: no progress bar per request", done, "Text I" not in err and "it/s" not in err,
             line_with(err, "it/s") or "(no progress lines)")
        documented = {"run", "labels", "id", "turns", "shares", "dominant", "tied", "mean_confidence", "turn"}
        case("docs/serve.md: the live-turn answer's shape", done, set(live) == documented, str(sorted(live)))
    figures = {"cases_tried": len(cases), "cases_as_documented": sum(c["as_documented"] for c in cases.values()),
               "tracebacks": tracebacks, "cases": cases, "seconds": time.perf_counter() - start}
    write_result("first_hour", figures)


if __name__ == "__main__":
    main()
