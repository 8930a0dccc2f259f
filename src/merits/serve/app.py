"""``merits serve``: a trained run as an HTTP service (FastAPI) with a web page.

    GET  /                                  the web page (plain HTML + JavaScript, served from merits/serve/static)
    GET  /health                            the run, its classes and stages, request counts
    POST /v1/predict                        JSON conversations -> each turn's emotion; or multipart: a field
                                            ``conversations`` (that JSON) with audio files its turns name
    POST /v1/predict/audio                  multipart recordings (field ``files``): Whisper cuts each into
                                            utterances, then every stage
    POST /v1/conversations/{id}/turns       live: append a turn (JSON text, or multipart ``text`` / ``audio``)
    GET / DELETE /v1/conversations/{id}     a live conversation so far / forget it
    GET  /docs                              the OpenAPI docs

Bad input is answered with a 4xx and ``{"error": message}``; the server goes on serving. Uploaded audio lives in a
temporary folder for the request only, unless ``keep_uploads`` names a directory.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, File, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, Field, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from merits.errors import ConfigError, MeritsError
from merits.serve.config import ServeConfig
from merits.serve.live import TurnConflict
from merits.serve.security import Guard, allowed_hosts, is_loopback, load_api_keys
from merits.serve.service import Conversation, RequestError, Service, Turn, new_request_id

log = logging.getLogger("merits")
STATIC = Path(__file__).parent / "static"
DOCS_ASSETS = "/static/docs"  # Swagger UI and ReDoc files (fastapi-offline), open like the page
MB = 1 << 20
MAX_FILES = 16  # audio files in one request
# what the decoders read (libsndfile, then FFmpeg); anything else is refused before decoding
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".m4a", ".aac", ".mp4", ".webm", ".aiff",
                  ".aif", ".wma", ".mkv", ".mov")


class TurnIn(BaseModel):
    text: str = ""
    audio: str | None = Field(None, description="multipart only: the file name of a recording uploaded alongside")
    label: str | None = Field(None, description="a gold label, where known: the answer then includes scores")
    speaker: str = Field("", description="who speaks: read by a run whose Stage I text was trained with speaker names")


class ConversationIn(BaseModel):
    id: str | None = Field(None, description="default: conv-1, conv-2, ... in request order")
    turns: list[TurnIn | str] = Field(..., description="in order; a plain string is a turn's text")


class PredictIn(BaseModel):
    conversations: list[ConversationIn]
    online: bool = Field(False, description="each turn from the turns up to it only, as a live system would")


class LiveTurnIn(BaseModel):
    text: str = ""
    label: str | None = None
    speaker: str = ""


def create_app(run_dir: str | Path, cfg: ServeConfig | None = None) -> FastAPI:
    cfg = cfg or ServeConfig()
    keys = load_api_keys(cfg.api_keys_file, cfg.api_keys_env)
    if not keys and not is_loopback(cfg.host):
        raise ConfigError(f"host {cfg.host} lets other machines in: give API keys (api_keys_file=PATH with one key per "
                          f"line, or the environment variable {cfg.api_keys_env}), or listen on 127.0.0.1")
    service = Service(run_dir, cfg)

    @asynccontextmanager
    async def lifespan(app):
        yield
        service.close()

    # /docs and /redoc from Swagger UI's and ReDoc's own files (fastapi-offline), not a CDN: offline the pages would
    # otherwise wait on assets that never come
    app = FastAPIOffline(title="merits serve", version="1", lifespan=lifespan, static_url=DOCS_ASSETS,
                  description=f"Emotions of conversations with the trained run {service.run.directory.name} "
                              f"(classes: {', '.join(service.labels)}).")
    app.state.service = service
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    # ------------------------------------------------------------------ errors: a 4xx with one clear message
    @app.exception_handler(RequestError)
    async def request_error(request, e: RequestError):
        return JSONResponse({"error": _public(str(e))}, e.status)

    @app.exception_handler(TurnConflict)
    async def conflict(request, e: TurnConflict):
        return JSONResponse({"error": str(e)}, 409)

    @app.exception_handler(MeritsError)
    async def merits_error(request, e: MeritsError):  # bad data found while predicting (e.g. undecodable audio)
        return JSONResponse({"error": _public(str(e))}, 422)

    @app.exception_handler(RequestValidationError)
    async def invalid(request, e: RequestValidationError):
        errors = e.errors()
        if any(err.get("type") == "json_invalid" for err in errors):
            return JSONResponse({"error": f"malformed JSON: {errors[0].get('ctx', {}).get('error', 'cannot parse')}"},
                                400)
        return JSONResponse({"error": _validation_message(errors), "detail": json.loads(json.dumps(errors, default=str))},
                            422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, e: StarletteHTTPException):  # e.g. too many multipart files: one error shape
        return JSONResponse({"error": _public(str(e.detail))}, e.status_code)

    # who may use it: keys, no cross-site writes, bounded bodies (merits.serve.security); the Host allow-list
    hosts = allowed_hosts(cfg.host, cfg.allowed_hosts)
    app.add_middleware(Guard, keys=keys, hosts=hosts, max_body=int(cfg.max_upload_mb * MB * MAX_FILES + MB))
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts)
    if keys:
        log.warning("merits serve: %d API key(s); /v1/* and /health need 'Authorization: Bearer <key>'", len(keys))

    # ------------------------------------------------------------------ endpoints
    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html")

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", **service.describe(), "live_conversations": service.live.count(),
                "stats": service.stats,
                "limits": {k: getattr(cfg, k) for k in ("max_upload_mb", "max_audio_seconds", "max_turns",
                                                        "max_text_chars", "max_batch")}}

    @app.post("/v1/predict", openapi_extra=_predict_body())
    async def predict(request: Request) -> dict:
        """Conversations -> each turn's label, confidence, class probabilities and every stage's label, and each
        conversation's shares. JSON (``PredictIn``), or multipart with a ``conversations`` field holding that JSON
        and the audio files its turns name."""
        if _is_multipart(request):
            form = await request.form(max_files=MAX_FILES)
            raw = form.get("conversations")
            if not isinstance(raw, str):
                raise RequestError("multipart request without a 'conversations' field (the JSON of the conversations)")
            body = _parse(PredictIn, raw)
            files = {f.filename: f for f in form.getlist("files") if hasattr(f, "filename")}
        else:
            body = _parse(PredictIn, (await request.body()).decode("utf-8", "replace"))
            files = {}
        with _Uploads(cfg) as uploads:
            convs = []
            for i, c in enumerate(body.conversations, 1):
                turns = []
                for k, t in enumerate(c.turns):
                    t = TurnIn(text=t) if isinstance(t, str) else t
                    audio = ""
                    if t.audio:
                        if t.audio not in files:
                            raise RequestError(f"conversation {c.id or f'conv-{i}'!r}, turn {k} names the audio "
                                               f"{t.audio!r}, which was not uploaded (uploaded: {sorted(files) or 'none'})")
                        audio = await run_in_threadpool(uploads.save, files[t.audio])
                    turns.append(Turn(t.text, audio, t.label or "", t.speaker))
                convs.append(Conversation(c.id or f"conv-{i}", turns))
            return await run_in_threadpool(service.predict, convs, body.online)

    @app.post("/v1/predict/audio")
    def predict_audio(files: list[UploadFile] = File(..., description="one or more recordings: each is a whole "
                                                                       "conversation (a call)")) -> dict:
        """Whole recordings: Whisper cuts each into utterances (as ``merits predict --segment``), then every stage."""
        if len(files) > MAX_FILES:
            raise RequestError(f"{len(files)} files in one request; at most {MAX_FILES}", 413)
        with _Uploads(cfg) as uploads:
            names, recordings = set(), []
            for f in files:
                name = Path(f.filename or "recording").stem or "recording"
                while name in names:
                    name += "+"
                names.add(name)
                recordings.append((name, uploads.save(f)))
            return service.segment(recordings)

    @app.post("/v1/conversations/{conversation_id}/turns", openapi_extra=_live_body())
    async def add_turn(conversation_id: str, request: Request) -> dict:
        """Live use: append a turn (JSON ``{"text": ...}``, or multipart ``text`` and/or ``audio``) and get its
        emotion from the conversation so far; the answer also holds every turn so far and the shares."""
        with _Uploads(cfg) as uploads:
            if _is_multipart(request):
                form = await request.form(max_files=1)
                text, label, audio = form.get("text") or "", form.get("label") or "", ""
                speaker = form.get("speaker") or ""
                upload = form.get("audio")
                if upload is not None and hasattr(upload, "filename"):
                    audio = await run_in_threadpool(uploads.save, upload)
                if not all(isinstance(v, str) for v in (text, label, speaker)):
                    raise RequestError("the 'text', 'label' and 'speaker' fields must be plain text")
            else:
                body = _parse(LiveTurnIn, (await request.body()).decode("utf-8", "replace"))
                text, label, audio, speaker = body.text, body.label or "", "", body.speaker
            return await run_in_threadpool(service.add_turn, conversation_id, Turn(text, audio, label, speaker))

    @app.get("/v1/conversations/{conversation_id}")
    def get_conversation(conversation_id: str) -> dict:
        return service.conversation(conversation_id)

    @app.delete("/v1/conversations/{conversation_id}")
    def delete_conversation(conversation_id: str) -> dict:
        return service.forget(conversation_id)

    def openapi() -> dict:
        if app.openapi_schema is None:
            app.openapi_schema = _schemas(get_openapi(title=app.title, version=app.version,
                                                      description=app.description, routes=app.routes))
        return app.openapi_schema

    app.openapi = openapi
    return app


# ---------------------------------------------------------------------------------------------- uploads
class _Uploads:
    """The audio files of one request: saved (size-capped, type- and length-checked) into a temporary folder that
    is removed when the request is answered, or moved under ``keep_uploads``."""

    def __init__(self, cfg: ServeConfig):
        self.cfg = cfg
        self.folder: Path | None = None

    def __enter__(self) -> "_Uploads":
        return self

    def __exit__(self, *exc) -> None:
        if self.folder is None:
            return
        if self.cfg.keep_uploads:
            keep = Path(self.cfg.keep_uploads)
            keep.mkdir(parents=True, exist_ok=True)
            shutil.move(str(self.folder), keep / self.folder.name)
        else:
            shutil.rmtree(self.folder, ignore_errors=True)

    def save(self, upload: UploadFile) -> str:
        name = Path(upload.filename or "audio").name
        suffix = Path(name).suffix.lower()
        if suffix not in AUDIO_SUFFIXES:
            raise RequestError(f"{name!r}: unsupported audio type {suffix or '(no extension)'!r}; send one of "
                               f"{', '.join(AUDIO_SUFFIXES)}", 415)
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix=f"merits-upload-{new_request_id()}-"))
        path = self.folder / f"{len(list(self.folder.iterdir())):03d}{suffix}"
        limit, size = self.cfg.max_upload_mb * MB, 0
        upload.file.seek(0)
        with open(path, "wb") as out:
            while chunk := upload.file.read(MB):
                size += len(chunk)
                if size > limit:
                    raise RequestError(f"{name!r} is larger than max_upload_mb ({self.cfg.max_upload_mb} MB)", 413)
                out.write(chunk)
        if size == 0:
            raise RequestError(f"{name!r} is empty (0 bytes)")
        seconds = _duration(path, name)
        if seconds > self.cfg.max_audio_seconds:
            raise RequestError(f"{name!r} lasts {seconds:.0f} s; this server takes at most max_audio_seconds "
                               f"({self.cfg.max_audio_seconds:.0f} s)", 413)
        return str(path)


def _duration(path: Path, name: str) -> float:
    """Seconds of audio in ``path`` from its header (libsndfile, else FFmpeg); 422 when neither can read it."""
    import soundfile as sf

    try:
        return float(sf.info(str(path)).duration)
    except Exception as first:
        try:
            import av

            with av.open(str(path)) as container:
                streams = [s for s in container.streams if s.type == "audio"]
                if not streams:
                    raise RequestError(f"{name!r} holds no audio stream", 422)
                if container.duration is not None:
                    return container.duration / 1e6
                stream = streams[0]
                return float(stream.duration * stream.time_base) if stream.duration else 0.0
        except RequestError:
            raise
        except Exception:
            raise RequestError(f"{name!r} cannot be decoded as audio (corrupt or not audio: {first})", 422) from None


# ---------------------------------------------------------------------------------------------- helpers
_PATH = re.compile(r"(?<![\w.:/])(?:/[^\s'\"():,;]+)+")


def _public(message: str) -> str:
    """An error as a client sees it: every absolute server path cut to its file name (uploads live in temporary
    folders whose names say nothing to the client and something to an attacker)."""
    return _PATH.sub(lambda m: Path(m.group(0)).name or m.group(0), message)


def _is_multipart(request: Request) -> bool:
    """multipart/form-data, or JSON (application/json, or no content type); anything else is refused (415)."""
    kind = request.headers.get("content-type", "")
    if kind.startswith("multipart/form-data"):
        return True
    if kind and not kind.startswith("application/json"):
        raise RequestError(f"content type {kind.split(';')[0]!r}: send application/json, or multipart/form-data "
                           f"with audio files", 415)
    return False


def _parse(model: type[BaseModel], raw: str):
    try:
        return model.model_validate_json(raw)
    except ValidationError as e:
        errors = e.errors()
        if any(err.get("type") == "json_invalid" for err in errors):
            raise RequestError(f"malformed JSON: {errors[0].get('ctx', {}).get('error', errors[0]['msg'])}", 400) from None
        raise RequestError(_validation_message(errors)) from None


def _validation_message(errors: list[dict]) -> str:
    parts = []
    for err in errors[:3]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where or 'body'}: {err.get('msg', 'invalid')}")
    return "invalid request: " + "; ".join(parts) + (f" (and {len(errors) - 3} more)" if len(errors) > 3 else "")


REF = "#/components/schemas/{model}"


def _schemas(schema: dict) -> dict:
    """The OpenAPI document with the JSON bodies' models among its components (the two bodies that are read by
    hand, JSON or multipart, refer to them there)."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for model in (PredictIn, LiveTurnIn):
        own = model.model_json_schema(ref_template=REF)
        components.update(own.pop("$defs", {}))
        components[model.__name__] = own
    return schema


def _predict_body() -> dict:
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": REF.format(model="PredictIn")}},
        "multipart/form-data": {"schema": {"type": "object", "properties": {
            "conversations": {"type": "string", "description": "the JSON of PredictIn; turns name their audio"},
            "files": {"type": "array", "items": {"type": "string", "format": "binary"}}}}}}}}


def _live_body() -> dict:
    return {"requestBody": {"required": True, "content": {
        "application/json": {"schema": {"$ref": REF.format(model="LiveTurnIn")}},
        "multipart/form-data": {"schema": {"type": "object", "properties": {
            "text": {"type": "string"}, "label": {"type": "string"},
            "audio": {"type": "string", "format": "binary"}}}}}}}


def serve(run_dir: str | Path, cfg: ServeConfig) -> None:
    """Load the run, then answer on cfg.host:cfg.port until interrupted."""
    import uvicorn

    app = create_app(run_dir, cfg)
    log.warning("merits serve: %s on http://%s:%d/ (docs at /docs)", Path(run_dir).name, cfg.host, cfg.port)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning")
