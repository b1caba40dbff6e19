"""Recording CALVIN-format datasets with the scripted expert, and reading them back."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from harness.data.calvin_format import CalvinSplit
from harness.data.check import check_path
from harness.data.config import DataConfig, build_dataset
from harness.data.windows import WindowSpec
from harness.record.__main__ import main as record_main
from harness.record.recorder import RecordConfig, plan_episode, record_dataset
from harness.sim.layout import REL_ORN_SCALE, REL_POS_SCALE
from harness.spatial import wrap_angle
from harness.tasks import TASK_NAMES, eval_instruction, training_instructions

ARTICULATED = ("open_drawer", "close_drawer", "move_slider_left", "move_slider_right",
               "turn_on_led", "turn_off_led", "turn_on_lightbulb", "turn_off_lightbulb")


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    cfg = RecordConfig(out=str(tmp_path_factory.mktemp("rec") / "ds"), episodes=2, val_episodes=1,
                       chain_length=2, tasks=ARTICULATED, workers=1, seed=3)
    summary = record_dataset(cfg, progress=False)
    return cfg, summary


def test_recorded_dataset_has_calvins_layout_and_passes_the_check(recorded):
    cfg, summary = recorded
    assert summary["episodes"] == 3 and summary["annotations"] == 6 and summary["failed_subtasks"] == {}
    reports = check_path(cfg.out)
    assert [r.errors for r in reports] == [[], []]
    split = CalvinSplit(cfg.out, "training")
    frame = split.load_frame(int(split.frame_ids()[0]))
    assert frame["rgb_static"].shape == (200, 200, 3) and frame["rgb_gripper"].shape == (84, 84, 3)
    assert frame["depth_static"].dtype == np.float32 and frame["rel_actions"].dtype == np.float32
    assert set(split.scene_info()) == {"calvin_scene_D"}
    assert (split.path / "statistics.yaml").is_file()


def test_annotations_follow_the_plans_with_project_and_eval_phrasings(recorded):
    cfg, _ = recorded
    train = CalvinSplit(cfg.out, "training").lang
    planned = [t for i in range(2) for t in plan_episode(cfg, "training", "D", i).tasks]
    assert list(train.task) == planned
    for ann, task in zip(train.ann, train.task):
        assert ann in training_instructions(task) and ann != eval_instruction(task)
    val = CalvinSplit(cfg.out, "validation").lang
    assert list(val.ann) == [eval_instruction(t) for t in val.task]


def test_actions_are_the_targets_the_relative_actions_set(recorded):
    """`rel_actions` are the commands sent (all in [-1, 1]); `actions` the absolute target each one sets."""
    cfg, _ = recorded
    split = CalvinSplit(cfg.out, "training")
    start, end = (int(v) for v in split.episodes[0])
    frames = [split.load_frame(i, ("actions", "rel_actions", "robot_obs")) for i in range(start, end + 1)]
    rel = np.stack([f["rel_actions"] for f in frames])
    absolute = np.stack([f["actions"] for f in frames])
    assert np.all(np.abs(rel) <= 1.0) and set(np.unique(rel[:, 6])) <= {-1.0, 1.0}
    assert np.allclose(np.diff(absolute[:, :3], axis=0), rel[1:, :3] * REL_POS_SCALE, atol=1e-5)
    assert np.allclose(wrap_angle(np.diff(absolute[:, 3:6], axis=0)), rel[1:, 3:6] * REL_ORN_SCALE, atol=1e-4)
    assert np.array_equal(absolute[:, 6], rel[:, 6])


def test_windows_read_back_the_recorded_actions(recorded):
    cfg, _ = recorded
    data = DataConfig(path=cfg.out, augment=False)
    ds = build_dataset(data, WindowSpec(4, 5), train=True)
    split = CalvinSplit(cfg.out, "training")
    for index in (0, len(ds) // 2, len(ds) - 1):
        item = ds[index]
        k, t0 = ds.window(index)
        end = int(ds.lang.indx[k, 1])
        assert item["task"] == ds.lang.task[k] and item["instruction"] == ds.lang.ann[k]
        for i in range(4):
            for j in range(5):
                t = t0 + i + j
                assert item["action_mask"][i, j] == (t <= end)
                if t <= end:
                    rel = split.load_frame(t, ("rel_actions",))["rel_actions"]
                    assert np.allclose(item["actions"][i, j], ds.normalizer.normalize(rel))
                    back = ds.normalizer.denormalize(item["actions"][i, j])
                    assert np.allclose(back[:6], np.clip(rel[:6], -0.65, 0.65), atol=1e-6) and back[6] == rel[6]
        assert np.array_equal(item["rgb_static"][0], split.load_frame(t0, ("rgb_static",))["rgb_static"])


def test_recording_continues_where_it_stopped_and_keeps_its_settings(tmp_path):
    base = dict(out=str(tmp_path / "ds"), val_episodes=0, chain_length=1, tasks=("open_drawer", "turn_on_led"), workers=1, seed=1)
    record_dataset(RecordConfig(episodes=1, **base), progress=False)
    first = CalvinSplit(base["out"], "training")
    first_frames = [first.load_frame(i, ("rel_actions",))["rel_actions"] for i in first.frame_ids()]
    summary = record_dataset(RecordConfig(episodes=2, **base), progress=False)
    assert summary["episodes"] == 1  # only the missing episode was recorded
    again = CalvinSplit(base["out"], "training")
    assert len(again.episodes) == 2
    assert all(np.array_equal(a, again.load_frame(i, ("rel_actions",))["rel_actions"]) for i, a in zip(first.frame_ids(), first_frames))
    with pytest.raises(ValueError, match="other settings"):
        record_dataset(RecordConfig(episodes=2, **{**base, "seed": 2}), progress=False)
    # the command line records the same settings (tasks given one after another, or with commas)
    cli = str(tmp_path / "cli")
    assert record_main([cli, "--scene", "D", "--episodes", "1", "--val-episodes", "0", "--chain-length", "1",
                        "--tasks", "open_drawer,turn_on_led", "--workers", "1", "--seed", "1"]) == 0
    settings = [json.loads((tmp_path / name / "recording.json").read_text()) for name in ("cli", "ds")]
    assert settings[0] == {**settings[1], "episodes": 1}
    assert [CalvinSplit(cli, "training").load_frame(i, ("rel_actions",))["rel_actions"].tolist()
            for i in CalvinSplit(cli, "training").frame_ids()] == [a.tolist() for a in first_frames]


def test_the_command_line_names_a_renamed_option(tmp_path, capsys):
    with pytest.raises(SystemExit):
        record_main([str(tmp_path / "x"), "--scenes", "D"])
    assert "--scenes is now --scene" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_plans_are_valid_chains_over_the_allowed_tasks():
    cfg = RecordConfig(out="unused", chain_length=3, tasks=ARTICULATED, workers=1)
    for i in range(20):
        plan = plan_episode(cfg, "training", "D", i)
        assert 1 <= len(plan.tasks) <= 3 and set(plan.tasks) <= set(ARTICULATED)
        assert plan == plan_episode(cfg, "training", "D", i)  # deterministic
    with pytest.raises(ValueError, match="unknown task|valid"):
        RecordConfig(out="x", tasks=("fly",))
    assert len({plan_episode(RecordConfig(out="x"), "training", "D", i).tasks[0] for i in range(40)} & set(TASK_NAMES)) > 5


def test_balanced_plans_even_out_the_tasks():
    """Uniform draws favour tasks valid in many states; balanced draws lift the rarest towards the rest."""
    tasks = ("turn_on_led", "turn_off_led", "open_drawer", "lift_red_block_table", "lift_red_block_slider")
    counts = {}
    for balance in (False, True):
        cfg = RecordConfig(out="unused", chain_length=2, tasks=tasks, workers=1, balance=balance)
        plans = [plan_episode(cfg, "training", "D", i) for i in range(300)]
        assert all(set(p.tasks) <= set(tasks) for p in plans)
        assert plans[:5] == [plan_episode(cfg, "training", "D", i) for i in range(5)]  # deterministic
        counts[balance] = Counter(t for p in plans for t in p.tasks)
    assert set(counts[True]) == set(tasks)
    spread = {b: max(c.values()) / min(c.values()) for b, c in counts.items()}
    assert spread[True] < 0.85 * spread[False], (spread, counts)  # measured: 1.92 -> 1.44
    assert min(counts[True].values()) > min(counts[False].values())  # lift_red_block_slider: 62 -> 71


def test_a_recording_started_before_a_setting_existed_continues(tmp_path):
    base = dict(out=str(tmp_path / "ds"), val_episodes=0, chain_length=1, tasks=("turn_on_led",), workers=1, seed=1)
    record_dataset(RecordConfig(episodes=1, **base), progress=False)
    saved = json.loads((tmp_path / "ds" / "recording.json").read_text())
    del saved["balance"]  # as written before the setting existed
    (tmp_path / "ds" / "recording.json").write_text(json.dumps(saved))
    assert record_dataset(RecordConfig(episodes=1, **base), progress=False)["episodes"] == 0
    with pytest.raises(ValueError, match="other settings \\(balance\\)"):
        record_dataset(RecordConfig(episodes=1, balance=True, **base), progress=False)
    # a torn or foreign recording.json is named, not a bare JSON error
    settings = tmp_path / "ds" / "recording.json"
    settings.write_text('{"episodes": 1, "sce')
    with pytest.raises(ValueError, match=f"{settings} cannot be read \\(.*\\): it says how"):
        record_dataset(RecordConfig(episodes=1, **base), progress=False)
    settings.write_text("[1, 2]")
    with pytest.raises(ValueError, match=f"{settings} holds a list, not the recording's settings"):
        record_dataset(RecordConfig(episodes=1, **base), progress=False)


def test_a_worker_killed_mid_recording_stops_it_and_the_same_command_goes_on(tmp_path):
    """A recording worker killed (an OOM kill, a simulator crash): the recording stops with an error instead of
    waiting forever for the dead worker's episode, keeps what it committed, and the same command finishes it."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, "-m", "harness.record", str(tmp_path / "ds"), "--scene", "D", "--episodes", "8",
           "--val-episodes", "0", "--chain-length", "2", "--workers", "2", "--seed", "0"]
    proc = subprocess.Popen(cmd, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        staging = tmp_path / "ds" / "training"
        deadline = time.monotonic() + 120
        workers: list[int] = []
        while time.monotonic() < deadline and not workers:  # the workers, once they write frames
            time.sleep(0.2)
            children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
            pids = [int(p) for p in children.read_text().split()] if children.exists() else []
            if any(staging.rglob("*.npz")):
                workers = [p for p in pids if "resource_tracker" not in Path(f"/proc/{p}/cmdline").read_text()]
        assert workers, "no recording worker was seen writing frames"
        os.kill(workers[0], signal.SIGKILL)
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode != 0 and "BrokenProcessPool" in err
    again = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(CalvinSplit(tmp_path / "ds", "training").episodes) == 8


def test_more_episodes_of_a_scene_before_another_recorded_one_are_refused_before_any_work(tmp_path):
    """A split keeps each scene's episodes in one range of frame ids: scene A cannot grow once B's episodes follow
    it (the count is per scene, so all would grow). Refused before recording anything and before recording.json
    changes."""
    base = dict(out=str(tmp_path / "ds"), scenes=("A", "B"), val_episodes=0, chain_length=1,
                tasks=("open_drawer", "turn_on_led"), workers=1, seed=1)
    record_dataset(RecordConfig(episodes=1, **base), progress=False)
    settings = (tmp_path / "ds" / "recording.json").read_text()
    with pytest.raises(ValueError, match="holds 1 episodes of scene A and episodes of scene B after them"):
        record_dataset(RecordConfig(episodes=2, **base), progress=False)
    assert (tmp_path / "ds" / "recording.json").read_text() == settings
    assert len(CalvinSplit(base["out"], "training").episodes) == 2


def test_a_second_recording_into_the_same_folder_is_refused_at_once(tmp_path):
    """Each split's writer locks its split, but recording.json is the folder's: a second recording running beside
    the first is refused before it reads or writes anything, naming the holder."""
    from harness.folder_lock import FolderBusy, FolderLock

    root = tmp_path / "ds"
    root.mkdir()
    cfg = RecordConfig(out=str(root), episodes=1, val_episodes=0, chain_length=1, tasks=("open_drawer",),
                       workers=1, seed=1)
    with FolderLock(root, "recorded by another harness.record"):
        with pytest.raises(FolderBusy, match=r"ds is being recorded by another harness.record \(pid \d+"):
            record_dataset(cfg, progress=False)
    assert not (root / "recording.json").exists()
    record_dataset(cfg, progress=False)  # the lock's owner gone, the same command records
    assert len(CalvinSplit(str(root), "training").episodes) == 1


def test_the_command_line_says_which_process_holds_the_folder(tmp_path, capsys):
    from harness.folder_lock import FolderLock

    with FolderLock(tmp_path, "recorded by another harness.record"):
        assert record_main([str(tmp_path), "--episodes", "1", "--workers", "1"]) == 1
    err = capsys.readouterr().err
    assert "is being recorded by another harness.record (pid" in err and "Traceback" not in err


def test_action_noise_moves_the_recorded_target_as_it_moves_the_env(tmp_path, monkeypatch):
    """With --perturb action_noise the env adds noise to each command; `actions` (the absolute target pose) was
    the commanded targets' sum, which drifts from the env's target by the noise's running sum (cm over a chain).
    It is the env's target now; `rel_actions` stay the expert's noise-free commands."""
    import harness.record.recorder as recorder
    from harness.envs.perturbations import Perturbations

    close = recorder.close_worker_tools
    monkeypatch.setattr(recorder, "close_worker_tools", lambda: None)  # the env stays, to be read after
    cfg = RecordConfig(out=str(tmp_path / "ds"), episodes=1, val_episodes=0, chain_length=2, tasks=ARTICULATED,
                       workers=1, seed=5, perturb=Perturbations(action_noise=3))
    try:
        record_dataset(cfg, progress=False)
        (env, _, _), = recorder._WORKER.values()
        split = CalvinSplit(cfg.out, "training")
        frames = [split.load_frame(int(i)) for i in split.frame_ids()]
        last = frames[-1]["actions"]
        assert np.allclose(last[:3], env.robot.target.pos, atol=1e-5)
        assert np.allclose(last[3:6], wrap_angle(env.robot.target.euler), atol=1e-5)
    finally:
        close()
    commanded = np.array([f["rel_actions"] for f in frames])
    assert np.abs(commanded).max() <= 1 and set(commanded[:, 6]) <= {-1.0, 1.0}  # the expert's, noise-free
