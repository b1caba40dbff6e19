"""openpi's client in a virtual environment of its own: openpi-client 0.1.2 requires numpy < 2, which the
project does not pin, so its tests run the client in another interpreter, as a real client would be.

The environment is made once (pip, from PyPI) under .cache/ in the repository and reused;
VLA_HARNESS_OPENPI_PYTHON names an interpreter that has openpi-client instead.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
from pathlib import Path

# openpi-client 0.1.2 imports typing_extensions without declaring it
REQUIREMENTS = ("openpi-client==0.1.2", "numpy<2", "typing_extensions")
VENV = Path(__file__).resolve().parents[1] / ".cache" / "openpi-client-0.1.2"


def openpi_python() -> Path:
    given = os.environ.get("VLA_HARNESS_OPENPI_PYTHON")
    if given:
        return Path(given)
    python, ready = VENV / "bin" / "python", VENV / ".ready"
    wanted = " ".join(REQUIREMENTS) + "\n"
    VENV.parent.mkdir(parents=True, exist_ok=True)
    with open(VENV.parent / f"{VENV.name}.lock", "w") as lock:  # test runs side by side in one checkout build it once
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not ready.exists() or ready.read_text() != wanted:
            subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True, timeout=300)
            pip = subprocess.run([str(python), "-m", "pip", "install", "-q", *REQUIREMENTS],
                                 capture_output=True, text=True, timeout=900)
            if pip.returncode != 0:
                raise RuntimeError(f"could not install {' '.join(REQUIREMENTS)} into {VENV}:\n{pip.stderr[-3000:]}")
            ready.write_text(wanted)
    return python
