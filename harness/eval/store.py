"""The run's output folder as the record of what is done: results.jsonl and the resume check.

results.jsonl holds one JSON line per finished job (chain or episode), appended and flushed (fsync) by
one process as soon as the job finishes. A run killed at any moment leaves at most one truncated last
line, which reading ignores and appending cuts off first. Under torchrun each rank appends to its own
results.rank{r}.jsonl, and rank 0 merges them into results.jsonl at the end.

run.json records what the results depend on (mode, agent, env, ep_len, seed, job_timeout_s): running
again in the same folder with other settings would mix results of different things, so it is refused.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path
from typing import Any, Iterable

from harness.durable_files import TMP_GLOB, atomic_write_text
from harness.eval.report import CHAIN_PLOT, TASK_PLOT

RESULTS = "results.jsonl"
RUN_FILE = "run.json"


def rank_log_name(rank: int) -> str:
    return f"results.rank{rank}.jsonl"


def read_log(path: Path) -> dict[str, dict[str, Any]]:
    """key -> record of one log file (the first record of a key wins). A last line without its newline is
    ignored even when it parses: a record counts once its newline is on disk (ResultsLog cuts such a line off
    before it appends, so that job runs again)."""
    records: dict[str, dict[str, Any]] = {}
    if not path.exists():
        return records
    *lines, _unterminated = path.read_bytes().split(b"\n")
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            key = record["key"]
        except (ValueError, KeyError, TypeError):  # a damaged file, worth saying
            warnings.warn(f"{path}:{number}: not a result record, skipped")
            continue
        records.setdefault(key, record)
    return records


def read_results(folder: Path) -> dict[str, dict[str, Any]]:
    """Every finished job recorded in a folder: results.jsonl and any rank logs."""
    records = read_log(folder / RESULTS)
    for path in sorted(folder.glob("results.rank*.jsonl")):
        for key, record in read_log(path).items():
            records.setdefault(key, record)
    return records


class ResultsLog:
    """Appends records to one JSONL file, each line flushed to disk before the next job is counted done."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._drop_partial_line()
        self._file = open(self.path, "a", encoding="utf-8")

    def _drop_partial_line(self) -> None:
        """A kill mid-write leaves a line without its newline; appending after it would glue two records."""
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(self.path, "r+b") as f:
                f.truncate(data.rfind(b"\n") + 1)

    def append(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, sort_keys=True) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "ResultsLog":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def write_merged(folder: Path, records: Iterable[dict[str, Any]]) -> None:
    """Rewrite results.jsonl atomically with the given records (in order), then drop the rank logs."""
    atomic_write_text(folder / RESULTS, "".join(json.dumps(record, sort_keys=True) + "\n" for record in records))
    for path in folder.glob("results.rank*.jsonl"):
        path.unlink()


# run.json entries that older runs did not record and whose value then is unknown: a rerun accepts their absence
# and records them (the folder a checkpoint link named, the checkpoint's digest, the dtype an agent's `auto`
# became: harness/eval/config.py, run_key)
UNRECORDED_BEFORE = ("checkpoint", "weights", "precision")


def check_run_key(folder: Path, key: dict[str, Any]) -> None:
    """Write run.json on the first run; on a rerun refuse settings that change what the results mean.

    A setting missing from an older run.json (added to the key later, e.g. job_timeout_s) counts as null, except
    those of UNRECORDED_BEFORE, which are taken from the rerun. A checkpoint folder at another path with the same
    digest (`weights`: the run folder moved or copied) is the same agent: the rerun records its new path."""
    path = folder / RUN_FILE
    if path.exists():
        old, new = json.loads(path.read_text()), json.loads(json.dumps(key))
        unrecorded = [k for k in UNRECORDED_BEFORE if k in new and k not in old]
        moved = _moved_checkpoint(old, new)
        diffs = [k for k in sorted(set(old) | set(new))
                 if old.get(k) != new.get(k) and k not in unrecorded and not (k == "agent" and moved)]
        if diffs:
            raise ValueError(
                f"{folder} holds results of another configuration (differs in: {', '.join(diffs)}); "
                "choose another output_dir, or overwrite=true to discard them"
            )
        if unrecorded or moved:
            atomic_write_text(path, json.dumps({**old, **{k: new[k] for k in (*unrecorded, "agent")}}, indent=2,
                                               sort_keys=True) + "\n")
        return
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(key, indent=2, sort_keys=True) + "\n")


def _moved_checkpoint(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """The two keys' agents differ only in the checkpoint's path, and the checkpoints' digests are recorded and equal."""
    if old.get("weights") is None or old.get("weights") != new.get("weights") or old.get("agent") == new.get("agent"):
        return False

    def pathless(agent: Any) -> Any:
        if not isinstance(agent, dict) or not isinstance(agent.get("kwargs"), dict):
            return agent
        return {**agent, "kwargs": {k: v for k, v in agent["kwargs"].items() if k != "checkpoint"}}

    return pathless(old["agent"]) == pathless(new["agent"])


# what a run writes besides its records: reports and plots (harness/eval/report.py), the env and agent it ran
# (evaluation.py), the failure analysis (failures.py), server statistics; traces and videos are folders
RUN_OUTPUTS = ("results.json", "report.md", CHAIN_PLOT, TASK_PLOT, "description.json",
               "failures.json", "failures.md", "server.rank*.json")
RUN_FOLDERS = ("traces", "videos")


def clear_results(folder: Path) -> None:
    """overwrite=true: forget the earlier run in this folder, its records and everything derived from them (a
    run killed before its reports are rewritten must not leave the old run's beside its records)."""
    for pattern in (RESULTS, RUN_FILE, "results.rank*.jsonl", *RUN_OUTPUTS, TMP_GLOB):
        for path in folder.glob(pattern):
            path.unlink()
    for name in RUN_FOLDERS:
        shutil.rmtree(folder / name, ignore_errors=True)
