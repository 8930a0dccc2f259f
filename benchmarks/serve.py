"""merits serve under load, as a user runs it: the server in its own process (``merits serve``) on localhost with
the MELD text run (the demo's run, runs/meld-offline, seed 0; trained first if absent), then

- 16 concurrent clients x 200 requests, each request one 10-turn conversation cut from MELD's test dialogues:
  ``requests_ok``, ``errors``, ``p50_ms``, ``p95_ms``, ``throughput_rps`` (and the server's batching counts);
- 20 bad requests of each kind the service refuses (malformed JSON, empty text, a label the run does not know,
  too many turns, too long a text, an unknown live conversation, a bad conversation id, audio named but not
  uploaded, unsupported audio, corrupt audio, too large a file, too long a recording):
  ``bad_requests_sent``, ``bad_requests_rejected_4xx`` (per kind too), ``server_alive_after``;
- ``--screenshot docs/serve.png``: the web page in headless Chromium with a pasted MELD conversation.

    python benchmarks/serve.py [--clients 16] [--requests 200] [--screenshot docs/serve.png]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from common import PROJECT, finished_run, write_result

RUN = ("offline", ["name=meld-offline", "seeds=[0]"])  # the demo's run (python3 quickstart.py demo)
LIMITS = ["max_turns=50", "max_text_chars=2000", "max_upload_mb=1", "max_audio_seconds=10"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _conversations(n_turns: int = 10) -> list[list[str]]:
    """10-turn windows of MELD's test dialogues (real text), as many as there are."""
    from merits.data import prepare

    m = prepare("meld")
    test = m.split("test")
    out = []
    for _, g in test.groupby("conversation_id", sort=False):
        texts = g.sort_values("turn")["text"].tolist()
        out += [texts[i:i + n_turns] for i in range(0, len(texts) - n_turns + 1, n_turns)]
    return out


def _wav(seconds: float, rate: int = 16000) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    t = np.arange(int(seconds * rate)) / rate
    sf.write(buf, (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate, format="WAV", subtype="FLOAT")
    return buf.getvalue()


def _bad_requests() -> dict[str, dict]:
    """kind -> the aiohttp request arguments of one bad request."""
    import aiohttp

    def form(**files):
        def make():
            data = aiohttp.FormData()
            for name, (filename, content) in files.items():
                data.add_field(name, content, filename=filename)
            return data
        return make

    def named_missing():
        data = aiohttp.FormData()
        data.add_field("conversations", json.dumps({"conversations": [{"turns": [{"text": "hi", "audio": "x.wav"}]}]}))
        data.add_field("files", _wav(0.5), filename="other.wav")  # a file, but not the one the turn names
        return data

    return {
        "malformed_json": {"method": "POST", "url": "/v1/predict", "data": b'{"conversations": [',
                           "headers": {"Content-Type": "application/json"}},
        "empty_text": {"method": "POST", "url": "/v1/predict", "json": {"conversations": [{"turns": ["  "]}]}},
        "unknown_label": {"method": "POST", "url": "/v1/predict",
                          "json": {"conversations": [{"turns": [{"text": "hi", "label": "happy"}]}]}},
        "too_many_turns": {"method": "POST", "url": "/v1/predict", "json": {"conversations": [{"turns": ["a"] * 51}]}},
        "text_too_long": {"method": "POST", "url": "/v1/predict", "json": {"conversations": [{"turns": ["a" * 2001]}]}},
        "wrong_content_type": {"method": "POST", "url": "/v1/predict", "data": b"conversations=x",
                               "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
        "unknown_conversation": {"method": "GET", "url": "/v1/conversations/nobody-here"},
        "bad_conversation_id": {"method": "POST", "url": "/v1/conversations/bad%20id!/turns", "json": {"text": "hi"}},
        "audio_not_uploaded": {"method": "POST", "url": "/v1/predict", "form": named_missing},
        "unsupported_audio": {"method": "POST", "url": "/v1/predict/audio", "form": form(files=("notes.txt", b"text"))},
        "corrupt_audio": {"method": "POST", "url": "/v1/predict/audio",
                          "form": form(files=("broken.wav", b"RIFF\x10\x00\x00\x00WAVEfmt not audio"))},
        "file_too_large": {"method": "POST", "url": "/v1/predict/audio", "form": form(files=("big.wav", _wav(20.0)))},
        "audio_too_long": {"method": "POST", "url": "/v1/predict/audio",
                           "form": form(files=("long.flac", _flac(12.0)))},
    }


def _flac(seconds: float) -> bytes:
    import soundfile as sf

    buf = io.BytesIO()
    sf.write(buf, np.zeros(int(seconds * 16000), np.int16) + 1, 16000, format="FLAC")  # small, but 12 s long
    return buf.getvalue()


async def _load(base: str, conversations: list[list[str]], clients: int, per_client: int) -> dict:
    import aiohttp

    latencies, errors = [], []

    async def client(c: int, session) -> None:
        for r in range(per_client):
            turns = conversations[(c * per_client + r) % len(conversations)]
            start = time.perf_counter()
            try:
                async with session.post(f"{base}/v1/predict", json={"conversations": [{"id": f"c{c}-{r}",
                                                                                       "turns": turns}]}) as resp:
                    body = await resp.json()
                    ok = resp.status == 200 and len(body["conversations"][0]["turns"]) == len(turns)
            except Exception as e:  # counted, never fatal: the figure is how many failed
                ok, body = False, {"error": repr(e)}
            if ok:
                latencies.append(time.perf_counter() - start)
            else:
                errors.append(str(body)[:200])

    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        start = time.perf_counter()
        await asyncio.gather(*(client(c, session) for c in range(clients)))
        wall = time.perf_counter() - start
    ms = np.array(latencies) * 1000
    return {"clients": clients, "requests_per_client": per_client, "turns_per_request": len(conversations[0]),
            "requests_ok": len(latencies), "errors": len(errors), "error_examples": errors[:3],
            "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
            "p95_ms": float(np.percentile(ms, 95)) if len(ms) else None,
            "throughput_rps": len(latencies) / wall, "turns_per_s": len(latencies) * len(conversations[0]) / wall,
            "load_wall_seconds": wall}


async def _bad(base: str, per_kind: int) -> dict:
    import aiohttp

    kinds = _bad_requests()
    rejected: dict[str, int] = {}
    statuses: dict[str, list[int]] = {}
    async with aiohttp.ClientSession() as session:
        for kind, spec in kinds.items():
            for _ in range(per_kind):
                args = {k: v for k, v in spec.items() if k in ("json", "data", "headers")}
                if "form" in spec:
                    args["data"] = spec["form"]()
                async with session.request(spec["method"], base + spec["url"], **args) as resp:
                    statuses.setdefault(kind, []).append(resp.status)
                    body = await resp.json()
                    if 400 <= resp.status < 500 and body.get("error"):
                        rejected[kind] = rejected.get(kind, 0) + 1
    return {"bad_requests_sent": per_kind * len(kinds), "bad_requests_rejected_4xx": sum(rejected.values()),
            "bad_requests_by_kind": {k: {"sent": per_kind, "rejected_4xx": rejected.get(k, 0),
                                         "status": sorted(set(v))} for k, v in statuses.items()}}


def _screenshot(base: str, path: Path, turns: list[str]) -> None:
    from selenium import webdriver
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1200,1400", "--hide-scrollbars"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=webdriver.ChromeService(shutil.which("chromedriver")), options=options)
    try:
        driver.get(base + "/")
        WebDriverWait(driver, 60).until(lambda d: "classes" in d.find_element(By.ID, "run-info").text)
        driver.find_element(By.ID, "conversation-text").send_keys("\n".join(turns))
        driver.find_element(By.ID, "predict-text").click()
        WebDriverWait(driver, 120).until(ec.presence_of_element_located((By.CSS_SELECTOR, "tr.turn")))
        height = driver.execute_script("return document.body.scrollHeight")
        driver.set_window_size(1200, min(max(height + 40, 900), 2400))
        path.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(path))
        print(f"wrote {path}")
    finally:
        driver.quit()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--bad", type=int, default=20, help="bad requests of each kind")
    parser.add_argument("--screenshot", help="also save the page with a pasted MELD conversation here (PNG)")
    args = parser.parse_args()

    run = finished_run(*RUN)
    conversations = _conversations()
    port = _port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "merits", "-q", "serve", str(run.directory), "--port", str(port),
                               f"live_store={PROJECT / 'runs' / 'bench-serve' / 'live.sqlite'}", *LIMITS],
                              env={**os.environ, "MERITS_QUIET": "1"})
    try:
        import urllib.request

        deadline = time.time() + 300
        while True:
            try:
                with urllib.request.urlopen(base + "/health", timeout=2):
                    break
            except OSError:
                if server.poll() is not None or time.time() > deadline:
                    raise SystemExit("merits serve did not start")
                time.sleep(0.5)
        load = asyncio.run(_load(base, conversations, args.clients, args.requests))
        print(json.dumps({k: load[k] for k in ("requests_ok", "errors", "p50_ms", "p95_ms", "throughput_rps")}))
        bad = asyncio.run(_bad(base, args.bad))
        with urllib.request.urlopen(base + "/health", timeout=10) as r:
            health = json.loads(r.read())
        alive = health["status"] == "ok" and server.poll() is None
        stats = health["stats"]
        if args.screenshot:
            _screenshot(base, Path(args.screenshot).resolve(), conversations[3])
    finally:
        server.terminate()
        server.wait(timeout=30)
    write_result("serve", {
        "run": str(run.directory.relative_to(PROJECT)), "stage": health["stage"], **load, **bad,
        "server_alive_after": alive,
        "server_batches": stats["batches"], "server_requests": stats["requests"],
        "mean_requests_per_batch": stats["batched_requests"] / max(stats["batches"], 1),
        "limits": LIMITS, "note": "server and clients on the same 2-core machine; each request one 10-turn MELD "
                                  "test conversation (text), Stage I + II text"})


if __name__ == "__main__":
    main()
