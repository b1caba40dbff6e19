"""The evaluation and the recorder on the real calvin_env: the scripted expert over CALVIN's first
chains through scripts/eval_calvin.sh env=calvin, what one env carries from one chain into the next,
and a CALVIN-format dataset recorded in calvin_env (checked, and read back as windows)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness.data.calvin_format import CalvinSplit
from harness.data.config import DataConfig, build_dataset
from harness.data.windows import WindowSpec
from harness.record.recorder import RecordConfig, record_dataset
from harness.eval import AgentConfig, EnvConfig
from harness.eval.jobs import chain_jobs
from harness.eval.runner import JobRunner, RunSettings

pytestmark = pytest.mark.calvin_env
ROOT = Path(__file__).resolve().parent.parent


def test_eval_script_runs_the_expert_on_calvin_env(tmp_path):
    out = tmp_path / "eval"
    proc = subprocess.run(
        ["bash", "scripts/eval_calvin.sh", "agent=scripted", "env=calvin", "env.scene=D", "num_chains=2", "workers=1",
         "videos=1", "video_stride=20", "video_failures=0", "progress=false", f"output_dir={out}"],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "Average successful sequence length: 5.000" in proc.stdout  # the expert completes CALVIN's first chains
    results = json.loads((out / "results.json").read_text())
    assert results["num_chains"] == 2 and results["avg_seq_len"] == 5.0 and results["chain_sr"]["5"] == 1.0
    assert results["env"]["backend"] == "calvin" and results["env"]["version"].startswith("calvin_env ")
    assert sum(v["success"] for v in results["task_info"].values()) == 10
    lines = (out / "results.jsonl").read_text().splitlines()
    assert [json.loads(line)["index"] for line in lines] == [0, 1]
    report = (out / "report.md").read_text()
    assert "calvin" in report and "5.00" in report
    for name in ("chain_success.png", "task_success.png", "videos/chain_0000.mp4", "config.yaml", "description.json"):
        assert (out / name).stat().st_size > 0, name


def _outcome(runner: JobRunner, job) -> tuple:
    record = runner.run(job)[0]
    return record["completed"], [(s["task"], s["success"], s["steps"]) for s in record["subtasks"]], record["final_state"]


def test_a_chain_after_another_in_one_env_and_alone(tmp_path):
    """calvin_env's reset keeps the last gripper action, so on a reused env (CALVIN's evaluation, and
    env=calvin's default) chain 1's first observation says what chain 0's last action did with the
    gripper, and the expert, reading it, acts differently. exact_reset=True removes that: the chain's
    subtasks and step counts are those of the chain alone (PyBullet's contact caches still carry over, so
    its end state may differ slightly: docs/EVALUATION.md); a new env per chain (fresh_per_chain=true) is
    the same as running the chain alone, end state included."""
    first, second = chain_jobs(2)
    expert = AgentConfig("scripted")
    fresh = JobRunner(EnvConfig("calvin", fresh_per_chain=True), expert, RunSettings())
    try:
        alone = _outcome(fresh, second)
        _outcome(fresh, first)
        assert _outcome(fresh, second) == alone
    finally:
        fresh.close()
    for options, same in (({}, False), ({"exact_reset": True}, True)):
        reused = JobRunner(EnvConfig("calvin", fresh_per_chain=False, options=options), expert, RunSettings())
        try:
            _outcome(reused, first)
            after = _outcome(reused, second)
        finally:
            reused.close()
        assert after[0] == alone[0] == 5
        assert (after[:2] == alone[:2]) is same, (options, after, alone)


def test_recorder_on_calvin_env(tmp_path):
    cfg = RecordConfig(out=str(tmp_path / "ds"), env="calvin", episodes=2, val_episodes=1, chain_length=1,
                       tasks=("open_drawer", "close_drawer", "turn_on_led", "turn_off_led"), workers=1, seed=3)
    summary = record_dataset(cfg, progress=False)
    assert summary["episodes"] == 3 and summary["annotations"] == 3 and summary["failed_subtasks"] == {}
    # each episode starts from its own state: calvin_env's reset kept the last episode's gripper action (closed,
    # on the drawer's handle), which frame 0 recorded and the expert started by undoing
    for split in ("training", "validation"):
        episodes = np.load(Path(cfg.out) / split / "ep_start_end_ids.npy")
        firsts = [CalvinSplit(cfg.out, split).load_frame(int(first))["robot_obs"][14] for first, _ in episodes]
        assert firsts == [1.0] * len(episodes), (split, firsts)
    assert json.loads((Path(cfg.out) / "recording.json").read_text())["env"] == "calvin"
    check = subprocess.run([sys.executable, "-m", "harness.data", "check", cfg.out], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stdout[-3000:] + check.stderr[-3000:]
    split = CalvinSplit(cfg.out, "training")
    frame = split.load_frame(int(split.frame_ids()[0]))
    assert frame["rgb_static"].shape == (200, 200, 3) and frame["rgb_gripper"].shape == (84, 84, 3)
    assert frame["robot_obs"].shape == (15,) and frame["scene_obs"].shape == (24,)
    windows = build_dataset(DataConfig(path=cfg.out, augment=False), WindowSpec(4, 5), train=True)
    assert len(windows) > 0
    for index in (0, len(windows) - 1):
        item = windows[index]
        assert item["rgb_static"].shape == (4, 200, 200, 3) and item["actions"].shape == (4, 5, 7)
        assert np.isfinite(item["actions"]).all() and item["task"] in cfg.tasks
