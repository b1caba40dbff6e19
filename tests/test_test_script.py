"""scripts/test.sh, the README's test command: which tests it selects and how many xdist workers run them.

Each case runs the script on a file of three trivial tests (one plain, one slow, one calvin_env), with the venv
running these tests (the script would install into any other first)."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
VENV = Path(sys.prefix)

MARKED = """
import pytest
def test_plain(): pass
@pytest.mark.slow
def test_slow(): pass
@pytest.mark.calvin_env
def test_real(): pass
"""


def _venv_is_current() -> bool:
    """The venv's install stamp is scripts/_venv.sh's for this checkout (otherwise the script reinstalls)."""
    stamp = VENV / ".vla-harness-installed"
    if not stamp.is_file() or os.environ.get("VLA_HARNESS_TORCH") or os.environ.get("VLA_HARNESS_TORCH_INDEX"):
        return False
    text = (ROOT / "pyproject.toml").read_bytes() + (ROOT / "setup.py").read_bytes() + b"torch  \n"
    return stamp.read_text().strip() == hashlib.sha256(text).hexdigest()


pytestmark = pytest.mark.skipif(not _venv_is_current(), reason="these tests run in the venv scripts/_venv.sh made")


def run_script(tmp_path: Path, *args: str, **env: str) -> tuple[set[str], int | None, subprocess.CompletedProcess]:
    """The tests the script ran and its xdist worker count (None: in one process)."""
    tests = tmp_path / "test_marked.py"
    tests.write_text(MARKED)
    base = {k: v for k, v in os.environ.items()
            if not k.startswith("PYTEST_") and k not in ("VLA_HARNESS_TEST_WORKERS", "CALVIN_ENV_SOURCE")}
    # the project's pytest configuration (addopts, registered markers, --strict-markers), as the suite runs with;
    # tests/conftest.py is not loaded for a file outside tests/, so the calvin_env test runs without calvin_env
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "test.sh"), "-c", str(ROOT / "pyproject.toml"), "-v",
                           "--color=no", "-p", "no:cacheprovider", *args, str(tests)],
                          capture_output=True, text=True, timeout=300,
                          env={**base, "VLA_HARNESS_VENV": str(VENV), **env})
    # "PATH::test_x PASSED", or under xdist "[gw0] [ 50%] PASSED PATH::test_x" (PATH empty outside the rootdir)
    ran = set(re.findall(r"::(test_\w+) PASSED", proc.stdout)) | set(re.findall(r"PASSED \S*::(test_\w+)", proc.stdout))
    created = re.search(r"created: (\d+)/\d+ workers?", proc.stdout)
    return ran, int(created.group(1)) if created else None, proc


def cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def test_the_default_runs_the_fast_tests_on_a_worker_per_core(tmp_path):
    ran, workers, proc = run_script(tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert ran == {"test_plain", "test_real"}
    assert workers == min(cores(), 8)


@pytest.mark.parametrize("args, env", [((), {"VLA_HARNESS_TEST_WORKERS": "0"}), (("--pdb",), {}),
                                       (("-p", "no:xdist"), {}), (("-pno:xdist",), {})],
                         ids=["workers=0", "pdb", "-p no:xdist", "-pno:xdist"])
def test_these_run_in_one_process(tmp_path, args, env):
    ran, workers, proc = run_script(tmp_path, *args, **env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert ran == {"test_plain", "test_real"} and workers is None


def test_the_worker_count_can_be_set(tmp_path):
    ran, workers, proc = run_script(tmp_path, VLA_HARNESS_TEST_WORKERS="3")
    assert proc.returncode == 0 and workers == 3 and ran == {"test_plain", "test_real"}


@pytest.mark.parametrize("args, expected", [(("--slow",), {"test_slow"}),
                                            (("--all",), {"test_plain", "test_slow", "test_real"}),
                                            (("-m", "calvin_env"), {"test_real"}),
                                            (("-mnot calvin_env",), {"test_plain"}),
                                            (("--all", "-m", "not calvin_env"), {"test_plain", "test_slow"})],
                         ids=["--slow", "--all", "-m calvin_env", "-mnot calvin_env", "--all -m"])
def test_the_suite_options_and_a_callers_marker_expression_combine(tmp_path, args, expected):
    ran, _, proc = run_script(tmp_path, *args, VLA_HARNESS_TEST_WORKERS="0")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert ran == expected


def test_a_marker_expression_that_selects_nothing_fails(tmp_path):
    ran, _, proc = run_script(tmp_path, "--slow", "-m", "calvin_env", VLA_HARNESS_TEST_WORKERS="0")
    assert ran == set() and proc.returncode == 5  # pytest's "no tests collected"
