"""`merits serve` lets no one in: API keys (constant-time, from a file or the environment), a Host allow-list, no
cross-site writes, bodies bounded while they stream, ids matched whole, deleted conversations gone from the files,
and errors without server paths (issue 25's hostile requests, each a case here)."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from merits.errors import ConfigError
from merits.serve import ServeConfig, create_app

KEY = "k" * 20 + "-a-long-random-key"
TEXT = {"conversations": [{"id": "c", "turns": ["I am so happy today"]}]}


def _client(root, tmp_path, **options) -> TestClient:
    cfg = ServeConfig(live_store=str(tmp_path / "live.sqlite"), **options)
    return TestClient(create_app(root, cfg), base_url="http://localhost")


def hostile_requests(client: TestClient) -> dict[str, int]:
    """Each hostile request and the status it got (what faults.json counts)."""
    big = (b"x" * 65536 for _ in range(40))  # 2.6 MB, chunked: no Content-Length
    return {
        "no key": client.post("/v1/predict", json=TEXT).status_code,
        "wrong key": client.post("/v1/predict", json=TEXT, headers={"Authorization": "Bearer " + "w" * 30}).status_code,
        "no key, health": client.get("/health").status_code,
        "no key, live turn": client.post("/v1/conversations/x/turns", json={"text": "hi"}).status_code,
        "no key, delete": client.delete("/v1/conversations/x").status_code,
        "cross-origin form post": client.post("/v1/conversations/x/turns", data={"text": "hi"},
                                              headers={"Origin": "http://evil.example",
                                                       "Authorization": f"Bearer {KEY}"}).status_code,
        "cross-site fetch": client.post("/v1/predict", json=TEXT, headers={"Sec-Fetch-Site": "cross-site",
                                                                           "Authorization": f"Bearer {KEY}"}).status_code,
        "foreign Host": client.get("/health", headers={"Host": "evil.example",
                                                       "Authorization": f"Bearer {KEY}"}).status_code,
        "oversized chunked body": client.post("/v1/predict", content=big,
                                              headers={"Content-Type": "application/json",
                                                       "Authorization": f"Bearer {KEY}"}).status_code,
    }


def test_a_service_with_keys_refuses_every_hostile_request(iemocap_run, tmp_path, monkeypatch):
    _, _, root = iemocap_run
    monkeypatch.setenv("MERITS_SERVE_API_KEYS", f"{KEY}, another-key-of-twenty-chars")
    with _client(root, tmp_path, stage="stage2_text", max_upload_mb=0.01) as client:
        got = hostile_requests(client)
        assert got == {"no key": 401, "wrong key": 401, "no key, health": 401, "no key, live turn": 401,
                       "no key, delete": 401, "cross-origin form post": 403, "cross-site fetch": 403,
                       "foreign Host": 400, "oversized chunked body": 413}, got
        ok = client.post("/v1/predict", json=TEXT, headers={"Authorization": f"Bearer {KEY}"})
        assert ok.status_code == 200 and ok.json()["conversations"][0]["turns"][0]["label"]
        assert client.get("/").status_code == 200  # the page itself is open; it asks for the key
        same_site = client.post("/v1/predict", json=TEXT, headers={"Authorization": f"Bearer {KEY}",
                                                                   "Origin": "http://localhost:8000"})
        assert same_site.status_code == 200


def test_keys_are_required_off_loopback_and_never_short(iemocap_run, tmp_path, monkeypatch):
    _, _, root = iemocap_run
    monkeypatch.delenv("MERITS_SERVE_API_KEYS", raising=False)
    with pytest.raises(ConfigError, match="lets other machines in"):
        create_app(root, ServeConfig(host="0.0.0.0", live_store=str(tmp_path / "l.sqlite")))
    keys = tmp_path / "keys.txt"
    keys.write_text("# one per line\nshort\n")
    with pytest.raises(ConfigError, match="shorter than 16"):
        create_app(root, ServeConfig(host="0.0.0.0", api_keys_file=str(keys), live_store=str(tmp_path / "l.sqlite")))
    keys.write_text(KEY + "\n")
    app = create_app(root, ServeConfig(host="0.0.0.0", api_keys_file=str(keys), live_store=str(tmp_path / "l.sqlite")))
    with TestClient(app, base_url="http://localhost") as client:
        assert client.get("/health", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_ids_errors_and_deleted_conversations(iemocap_run, tmp_path):
    """`abc%0A` was stored as `abc\\n`; too many files answered Starlette's {"detail"}; a deleted conversation's text
    stayed readable in the SQLite files; audio errors showed the server's temporary paths."""
    _, _, root = iemocap_run
    with _client(root, tmp_path, stage="stage2_text") as client:
        docs = client.get("/docs").text  # Swagger UI from the package's own files: /docs works offline
        assert "/static/docs/swagger-ui-bundle.js" in docs and "cdn." not in docs
        assert client.get("/static/docs/swagger-ui-bundle.js").status_code == 200
        assert "cdn." not in client.get("/redoc").text
        assert client.post("/v1/conversations/abc%0A/turns", json={"text": "hi"}).status_code == 422
        files = [("files", (f"{i}.wav", b"RIFF", "audio/wav")) for i in range(40)]
        many = client.post("/v1/predict", data={"conversations": '{"conversations": []}'}, files=files)
        assert many.status_code in (400, 413) and "error" in many.json() and "detail" not in many.json()
        bad = client.post("/v1/predict", data={"conversations": '{"conversations": [{"turns": '
                                                                '[{"text": "", "audio": "a.wav"}]}]}'},
                          files=[("files", ("a.wav", b"RIFF$\x00\x00\x00WAVEfmt not audio", "audio/wav"))])
        assert bad.status_code == 422 and "/tmp" not in bad.json()["error"]
        marker = "a secret sentence only this conversation holds"
        assert client.post("/v1/conversations/secret/turns", json={"text": marker}).status_code == 200
        assert client.delete("/v1/conversations/secret").status_code == 200
    stored = b"".join(p.read_bytes() for p in tmp_path.glob("live.sqlite*"))
    assert marker.encode() not in stored
