"""Tests marked `calvin_env` run against the real calvin_env whenever it is importable, and are skipped,
saying so in the header, when it is not (scripts/install_calvin_env.sh installs it; CI does, from the
bundle). VLA_HARNESS_REQUIRE_CALVIN_ENV=1 (set by .ci/run) turns a missing calvin_env into an error, so
that a broken install cannot pass as skipped tests."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

REQUIRE_VAR = "VLA_HARNESS_REQUIRE_CALVIN_ENV"
_MARKED = pytest.StashKey[int]()


def _calvin_env_location() -> Path | None:
    spec = importlib.util.find_spec("calvin_env")
    return None if spec is None or spec.origin is None else Path(spec.origin).parent.parent


CALVIN_ENV_ROOT = _calvin_env_location()
SKIP_REASON = "calvin_env is not installed (scripts/install_calvin_env.sh, or CALVIN_ENV_SOURCE=... scripts/test.sh)"


def pytest_configure(config: pytest.Config) -> None:
    _share_the_cores_among_xdist_workers()
    if CALVIN_ENV_ROOT is None and os.environ.get(REQUIRE_VAR) == "1":
        raise pytest.UsageError(f"{REQUIRE_VAR}=1 but {SKIP_REASON}")


def _share_the_cores_among_xdist_workers() -> None:
    """Under pytest-xdist (scripts/test.sh), each worker's torch, and the processes its tests start, take the
    worker's share of the cores it may run on (taskset, cpusets): a worker per core each running torch's
    default of a thread per core spins OpenMP threads on busy cores, several times slower. Set before any
    test imports torch; an OMP_NUM_THREADS of the caller's stays."""
    workers = os.environ.get("PYTEST_XDIST_WORKER_COUNT")
    if workers and "OMP_NUM_THREADS" not in os.environ:
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        os.environ["OMP_NUM_THREADS"] = str(max(1, cores // int(workers)))


def pytest_report_header(config: pytest.Config) -> str:
    if CALVIN_ENV_ROOT is None:
        return f"calvin_env: NOT INSTALLED - the tests marked calvin_env are skipped: {SKIP_REASON}"
    return f"calvin_env: {CALVIN_ENV_ROOT} - the tests marked calvin_env run on the real simulator"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    marked = [item for item in items if item.get_closest_marker("calvin_env") is not None]
    config.stash[_MARKED] = len(marked)
    if CALVIN_ENV_ROOT is not None:
        return
    skip = pytest.mark.skip(reason=SKIP_REASON)
    for item in marked:
        item.add_marker(skip)


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """The same line at the end, where `-q` runs show it too. Under pytest-xdist the workers collect, so this
    process counts the skips that give the reason instead."""
    marked = config.stash.get(_MARKED, 0) or sum(
        SKIP_REASON in str(report.longrepr) for report in terminalreporter.stats.get("skipped", []))
    if marked and CALVIN_ENV_ROOT is None:
        terminalreporter.write_line(f"calvin_env: NOT INSTALLED - {marked} tests marked calvin_env were skipped: {SKIP_REASON}")


@pytest.fixture(scope="session")
def recording(tmp_path_factory) -> Path:
    """A small dataset recorded by the scripted expert in built-in scene D (once per session): 2 training
    episodes (rotate_blue_block_left, open_drawer; push_pink_block_right, lift_blue_block_slider) and 1
    validation episode (lift_blue_block_slider, stack_block): block, contact and articulated tasks."""
    from harness.record.recorder import RecordConfig, record_dataset

    out = tmp_path_factory.mktemp("recording") / "ds"
    summary = record_dataset(RecordConfig(out=str(out), episodes=2, val_episodes=1, chain_length=2, workers=1, seed=2),
                             progress=False)
    assert summary["failed_subtasks"] == {} and summary["annotations"] == 6
    return out
