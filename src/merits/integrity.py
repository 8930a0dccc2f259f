"""A folder that vouches for its own files: a listing of every file's size and SHA-256, checked before the folder
is trusted (an exported model: ``merits-export.json``). A damaged, truncated or missing file is a named error."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from merits.errors import DamagedFileError

LISTING = "merits-export.json"
CHUNK = 1 << 20


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(CHUNK):
            h.update(block)
    return h.hexdigest()


def write_listing(folder: Path, meta: dict) -> dict:
    """``meta`` plus ``files`` {relative path: {bytes, sha256}} of every file now in ``folder``, written last."""
    files = {str(f.relative_to(folder)): {"bytes": f.stat().st_size, "sha256": sha256(f)}
             for f in sorted(folder.rglob("*")) if f.is_file() and f.name != LISTING}
    record = {**meta, "files": files}
    (folder / LISTING).write_text(json.dumps(record, indent=2))
    return record


def verify_listing(folder: Path, fix: str) -> dict:
    """The listing of ``folder`` after checking that every file it names is there, of its size and its hash;
    DamagedFileError naming the first file that is not (``fix``: what to do about it)."""
    path = folder / LISTING
    try:
        record = json.loads(path.read_text())
        files = record["files"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise DamagedFileError(f"{path} is damaged ({type(e).__name__}): {fix}") from None
    for name, want in files.items():
        f = folder / name
        if not f.is_file():
            raise DamagedFileError(f"{folder}: {name} is missing: {fix}")
        if f.stat().st_size != want["bytes"]:
            raise DamagedFileError(f"{folder}: {name} is {f.stat().st_size} bytes, {want['bytes']} when exported "
                                   f"(truncated or replaced): {fix}")
        if sha256(f) != want["sha256"]:
            raise DamagedFileError(f"{folder}: {name} does not hold the bytes exported (SHA-256 differs): {fix}")
    return record
