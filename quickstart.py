#!/usr/bin/env python3
"""Set everything up in ./.venv, then run the main job or the tests.

    python3 quickstart.py demo    # install, then Stage I + II text on the embedded MELD (offline encoder)
    python3 quickstart.py test    # install, then the test suite

Only Python 3.11 and pip are needed. Extra arguments go to the command (e.g. `demo seeds=[0,1,2]`,
`test -k meld`). Installation is skipped when pyproject.toml has not changed since the last one.
"""

import hashlib
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
# torch first and pinned: 2.13.0 is the CPU build available offline here; an open range would pull a CUDA build.
TORCH = "torch==2.13.0"


def sh(*cmd) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    done = subprocess.run([str(c) for c in cmd], cwd=ROOT)
    if done.returncode:  # the command has said what went wrong; its exit status is ours, without a traceback
        sys.exit(done.returncode)


def setup() -> None:
    if sys.version_info[:2] != (3, 11):
        sys.exit(f"merits needs Python 3.11 (this is {sys.version.split()[0]}); run it with python3.11")
    if not (BIN / "python").exists():
        venv.EnvBuilder(with_pip=True).create(VENV)
    stamp = VENV / ".merits-installed"
    want = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.is_file() and stamp.read_text() == want:
        return
    pip = [BIN / "python", "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    sh(*pip, TORCH)
    sh(*pip, "-e", ".[dev,base]")  # base: the stronger offline models, which the tests check
    stamp.write_text(want)


def browser() -> None:
    """The web page's test drives Debian's Chromium through chromedriver (selenium): installed when missing."""
    if shutil.which("chromium") and shutil.which("chromedriver"):
        return
    if not shutil.which("apt-get"):
        print("note: chromium and chromedriver are missing and there is no apt-get: the browser test will fail")
        return
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = [*sudo, "apt-get", "install", "-y", "-q", "chromium", "chromium-driver"]
    print("+", " ".join(install), flush=True)
    if subprocess.run(install, env=env, stdout=subprocess.DEVNULL).returncode:  # stale package lists: refresh once
        sh(*sudo, "apt-get", "update", "-q")
        sh(*install)


def main() -> None:
    if len(sys.argv) < 2 or sys.argv[1] not in ("demo", "test"):
        sys.exit(__doc__)
    what, extra = sys.argv[1], sys.argv[2:]
    setup()
    if what == "demo":
        sh(BIN / "merits", "demo", *extra)
    else:
        browser()
        sh(BIN / "python", "-m", "pytest", "-q", *extra)


if __name__ == "__main__":
    main()
