"""scripts/_venv.sh, as a fresh clone meets it: a few progress lines, pip's output in a log in the venv,
and the log's tail when a stage fails."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def source_venv_script(venv: Path, **env: str) -> subprocess.CompletedProcess:
    cmd = ["bash", "-c", f'source "{ROOT / "scripts" / "_venv.sh"}" && python -c "import harness, torch; print(\'ready\')"']
    return subprocess.run(cmd, capture_output=True, text=True, timeout=1200,
                          env={**os.environ, "VLA_HARNESS_VENV": str(venv), **env})


def test_a_failing_stage_prints_the_end_of_pips_log(tmp_path):
    venv = tmp_path / "venv"
    proc = source_venv_script(venv, VLA_HARNESS_TORCH="0.0.1")  # no such torch
    assert proc.returncode != 0 and "ready" not in proc.stdout
    log = venv / "install.log"
    head, _, tail = proc.stderr.partition(f"FAILED; the end of {log}:")
    assert tail, proc.stderr
    assert len(head.splitlines()) <= 4 and f"pip's log: {log}" in head
    assert "ERROR" in tail and tail.strip().splitlines()[-1] in log.read_text()
    assert not (venv / ".vla-harness-installed").exists()  # the next run tries again


@pytest.mark.slow
def test_a_fresh_install_prints_a_line_per_stage_and_no_warnings(tmp_path):
    venv = tmp_path / "venv"
    proc = source_venv_script(venv)
    assert proc.returncode == 0 and proc.stdout.strip() == "ready", proc.stderr[-3000:]
    lines = proc.stderr.splitlines()
    assert len(lines) == 5 and all(line.startswith("[vla-harness]") for line in lines), proc.stderr
    assert [line.endswith(" s)") for line in lines[2:]] == [True] * 3  # "... done (N s)"
    log = (venv / "install.log").read_text()
    assert "Successfully installed" in log and "project.license" not in log  # the pyproject has no deprecated keys


def test_a_venv_left_half_made_is_named_instead_of_failing_later(tmp_path):
    """`python -m venv` without python3-venv (Debian) leaves bin/python and no activate script: every later run
    failed at `source activate`; now the script says what is wrong and what to do."""
    import sys

    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "python").symlink_to(sys.executable)
    proc = source_venv_script(venv)
    assert proc.returncode != 0 and "ready" not in proc.stdout
    assert f"{venv} is incomplete" in proc.stderr and "remove it and run again" in proc.stderr, proc.stderr
