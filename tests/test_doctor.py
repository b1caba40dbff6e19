"""The pre-flight doctor (harness/doctor): it passes a consistent checkpoint + recording + env, and fails a
checkpoint with the other gripper sign, one that ships the wrong normaliser, and one whose camera the env
does not render. The checkpoint is a tiny VLA (static + gripper camera, proprio) trained for 150 steps on
the session's recording (tests/conftest.py)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from safetensors import safe_open
from safetensors.torch import save_file

from harness.data.normalization import ActionNormalizer
from harness.data.sync import RecordedStates, open_frames, read_stretch, stretch_bounds
from harness.doctor import DoctorConfig, run_doctor
from harness.doctor.__main__ import main as doctor_main
from agents.replay import ReplayAgent
from harness.doctor.env_checks import action_form_check, camera_check, replay_check, robot_obs_check
from harness.envs import make_env
from harness.spatial import euler_to_quat, quat_to_rotvec
from tests.train_helpers import train_here

FAST = dict(windows=8, replay_steps=32)


@pytest.fixture(scope="module")
def checkpoint(recording, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("doctor_train")
    train_here(recording, out, "trainer.max_steps=150", "trainer.batch_size=8", "trainer.val_every=1000",
               "trainer.ckpt_every=1000", "model.use_gripper_image=true", "model.loss.gripper_weight=1.0",
               "data.normalizer.clip=1.0", "optim.lr=3e-3")
    return (out / "checkpoints" / "last").resolve()


def _copy(checkpoint: Path, dst: Path) -> Path:
    shutil.copytree(checkpoint, dst)
    return dst


def _status(report) -> dict[str, str]:
    return {c.name: c.status for c in report.checks}


def flip_gripper_head(checkpoint: Path, dst: Path) -> Path:
    """The gripper logit negated (its last layer's weights and bias): the checkpoint a model trained on data
    with the other gripper sign would be."""
    folder = _copy(checkpoint, dst)
    path = folder / "model.safetensors"
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    layers = [int(m.group(1)) for k in tensors if (m := re.fullmatch(r"head\.decoder\.gripper\.(\d+)\.weight", k))]
    for part in ("weight", "bias"):
        key = f"head.decoder.gripper.{max(layers)}.{part}"
        tensors[key] = -tensors[key]
    save_file(tensors, str(path), metadata=meta)
    return folder


def replace_normaliser(checkpoint: Path, dst: Path, normalizer: ActionNormalizer) -> Path:
    """Another normaliser in normalizer.json and config.yaml alike (so the folder itself is consistent)."""
    folder = _copy(checkpoint, dst)
    normalizer.save(folder / "normalizer.json")
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["normalizer"] = normalizer.to_dict()
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return folder


def test_a_consistent_checkpoint_data_and_env_pass(checkpoint, recording):
    report = run_doctor(DoctorConfig(checkpoint=str(checkpoint), **FAST))  # the data: config.yaml's data.path
    status = _status(report)
    assert report.exit_code == 0 and not report.failed, report.render()
    assert str(recording / "training") in report.checks[1].message
    assert all(status[n] == "pass" for n in ("checkpoint", "data", "ep_len", "cameras", "action form", "normaliser", "gripper",
                                             "robot_obs", "sync: actions", "sync: language", "replay")), report.render()
    assert status["predictions"] in ("pass", "warn") and status["instructions"] in ("pass", "warn")
    assert status["segment starts"] in ("pass", "warn") and "segments' first frames" in report.render()
    assert status["images"] == "skip" and "no task with two annotated segments" in report.render()  # 4 tasks, once each
    assert status["gripper switches"] in ("pass", "warn") and "where the recorded gripper command switches" in report.render()
    lines = report.render().splitlines()
    assert len(lines) == 2 + len(report.checks) + sum(bool(c.advice) for c in report.checks)


class ResetFails:
    """An env (an --env-factory) whose reset raises, as a custom backend missing a scene file would."""

    def __init__(self, **kwargs) -> None:
        from harness.envs import make_env

        self.env = make_env("builtin", **kwargs)
        self.description = self.env.description

    def reset(self, robot_obs=None, scene_obs=None):
        raise RuntimeError("scene file missing")

    def close(self) -> None:
        self.env.close()


def test_an_env_factory_is_the_env_of_every_check_and_its_failure_a_finding(checkpoint):
    """The data checks restored the recorded states in the built-in scene whatever --env-factory said, and an env
    failing at reset stopped the doctor with a traceback: now each check that needs the env names the failure."""
    report = run_doctor(DoctorConfig(checkpoint=str(checkpoint), env_factory="tests.test_doctor:ResetFails", **FAST))
    status = _status(report)
    assert status["cameras"] == "fail" and status["action form"] == "skip", report.render()
    assert status["robot_obs"] == "fail" and status["replay"] == "fail", report.render()
    assert all("scene file missing" in c.message for c in report.checks if c.name in ("cameras", "robot_obs", "replay"))
    assert status["normaliser"] == "pass"  # the checks that need no env ran


def test_the_other_gripper_sign_fails(checkpoint, tmp_path, capsys):
    flipped = flip_gripper_head(checkpoint, tmp_path / "flipped")
    report = run_doctor(DoctorConfig(checkpoint=str(flipped), **FAST))
    failed = [c.name for c in report.failed]
    assert failed == ["gripper"], report.render()
    assert "other gripper sign" in report.failed[0].advice
    assert doctor_main([str(flipped), "--windows", "8", "--replay-steps", "8", "--json"]) == 1
    printed = json.loads(capsys.readouterr().out)
    assert printed["failed"] == 1 and {c["name"]: c["status"] for c in printed["checks"]}["gripper"] == "fail"


@pytest.mark.parametrize("normalizer", [ActionNormalizer("clip_scale", clip=0.1),
                                        ActionNormalizer("zscore", mean=(0.0,) * 6, std=(0.05,) * 6)],
                         ids=["clip_0.1", "zscore_other_statistics"])
def test_a_wrong_normaliser_fails(checkpoint, tmp_path, normalizer):
    wrong = replace_normaliser(checkpoint, tmp_path / "wrong", normalizer)
    report = run_doctor(DoctorConfig(checkpoint=str(wrong), env="none", **FAST))
    status = _status(report)
    assert status["normaliser"] == "fail" and report.exit_code == 1, report.render()
    if normalizer.mode == "zscore":  # un-normalised with a std 10x too small: the actions shrink 10x
        assert status["predictions"] in ("fail", "warn")


def test_a_camera_the_env_does_not_render_fails(checkpoint, capsys):
    code = doctor_main([str(checkpoint), "--env-option", "cameras=[static]", "--windows", "8", "--replay-steps", "8"])
    out = capsys.readouterr().out
    assert code == 1
    assert re.search(r"FAIL  cameras .*renders rgb_static \(200, 200, 3\)$", out, re.M), out
    assert "the env does not render rgb_gripper" in out and "FAIL  action form" in out


def test_without_data_or_env_the_data_checks_are_skipped(checkpoint, tmp_path):
    moved = _copy(checkpoint, tmp_path / "ckpt")
    config = yaml.safe_load((moved / "config.yaml").read_text())
    config["data"]["path"] = str(tmp_path / "nowhere")
    (moved / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    report = run_doctor(DoctorConfig(checkpoint=str(moved), env="none", **FAST))
    status = _status(report)
    assert status["normaliser"] == status["replay"] == status["cameras"] == "skip" and report.exit_code == 0
    assert status["images"] == status["gripper switches"] == "skip"
    assert "nowhere" in report.checks[-1].message
    broken = run_doctor(DoctorConfig(checkpoint=str(tmp_path / "missing")))
    assert [c.name for c in broken.failed] == ["checkpoint"] and broken.exit_code == 1


def _stretches(recording: Path) -> list:
    source = open_frames(recording, "training")
    return [read_stretch(source, *b) for b in stretch_bounds(source)]


def test_robot_obs_in_axis_angle_fails(recording):
    stretches = _stretches(recording)
    states = RecordedStates()
    try:
        assert robot_obs_check(states, stretches).status == "pass"
        for st in stretches:
            st.robot_obs[:, 3:6] = quat_to_rotvec(euler_to_quat(st.robot_obs[:, 3:6]))
        check = robot_obs_check(states, stretches)
    finally:
        states.close()
    assert check.status == "fail" and "axis-angle" in check.advice


@pytest.mark.parametrize("break_it", ["shift", "gripper"])
def test_replay_of_broken_actions_fails(recording, break_it):
    stretches = _stretches(recording)
    states = RecordedStates()
    try:
        assert replay_check(states, stretches, 64).status == "pass"
        for st in stretches:
            if break_it == "shift":  # the actions one frame ahead of the observations
                st.rel_actions[:-1] = st.rel_actions[1:].copy()
            else:
                st.rel_actions[:, 6] *= -1
        check = replay_check(states, stretches, 64)
    finally:
        states.close()
    assert check.status == "fail", check
    assert ("TCP" if break_it == "shift" else "gripper width") in check.advice


def test_replay_judges_each_error_at_its_own_worst_episode(recording):
    """One episode with its gripper commands flipped beside others whose TCP errs more: the width failure is
    found (the episode with the largest TCP error was the only one judged)."""
    stretches = _stretches(recording)
    assert len(stretches) >= 2
    stretches[0].rel_actions[:, 6] *= -1
    for st in stretches[1:]:
        st.rel_actions[:, :3] *= 1.3  # more TCP error than the flipped episode
    states = RecordedStates()
    try:
        check = replay_check(states, stretches, 64)
    finally:
        states.close()
    assert check.status == "fail" and "gripper width" in check.advice, check
    assert f"width episode {stretches[0].episode}" in check.message


def test_shards_stored_at_the_input_size_expect_the_recorded_size(recording, tmp_path):
    from harness.data.shards import ShardFrameSource, convert
    from harness.doctor.doctor import _image_shapes

    out = tmp_path / "small"
    convert(recording / "training", out, resize={"rgb_static": 48}, resize_mode="bicubic", progress=False)
    shapes = _image_shapes(ShardFrameSource(out), ("static", "gripper"))
    assert shapes == {"rgb_static": (200, 200, 3), "rgb_gripper": (84, 84, 3)}  # rendered as recorded, not 48 px


def test_images_rendered_at_another_size_than_the_data_fail():
    expected = {"rgb_static": (200, 200, 3)}
    with make_env("builtin", cameras=("static",), camera_sizes={"static": 100}) as env:
        small = camera_check(("static",), expected, "as in its data", env.reset(), "env=builtin")
    with make_env("builtin", cameras=("static",)) as env:
        same = camera_check(("static",), expected, "as in its data", env.reset(), "env=builtin")
    assert small.status == "fail" and "trained on (200, 200, 3), rendered (100, 100, 3)" in small.advice
    assert same.status == "pass"


def test_the_action_form_is_read_as_the_evaluation_reads_the_declared_type():
    """A 7-vector pose from an agent that declares absolute actions is what the evaluation sends as a
    target; a pose declared relative, or relative steps declared absolute, fail."""
    with make_env("builtin", cameras=()) as env:
        obs = env.reset()
        pose, step = np.r_[obs["robot_obs"][:6], 1.0], np.r_[0.5, 0, -0.2, 0, 0, 0.1, -1.0]
        status = {(kind, declared): action_form_check(ReplayAgent([action], action_type=declared), obs, "open the drawer",
                                                      "env=builtin").status
                  for kind, action in (("pose", pose), ("step", step)) for declared in ("absolute", "relative")}
        refused = action_form_check(ReplayAgent([np.r_[step[:6], 0.3]]), obs, "open the drawer", "env=builtin")
    assert status == {("pose", "absolute"): "pass", ("step", "relative"): "pass",
                      ("pose", "relative"): "fail", ("step", "absolute"): "fail"}
    assert refused.status == "fail" and "refuses" in refused.message


def test_segment_starts_are_predicted_with_each_tasks_instruction(checkpoint, recording):
    from agents.vla.checkpoint import load_checkpoint
    from harness.data.windows import NpzFrameSource
    from harness.doctor.model_checks import predict_segment_starts

    ckpt = load_checkpoint(checkpoint)
    starts = predict_segment_starts(ckpt.model, ckpt.normalizer, NpzFrameSource(recording, "training"), 3)
    source = NpzFrameSource(recording, "training")
    tasks = sorted(set(source.lang.task))
    assert len(starts["tasks"]) == 3 and starts["own"].shape == (3, 7) and starts["data"].shape == (3, 7)
    assert all(s.shape == (len(tasks) - 1, 7) for s in starts["swapped"])
    first_frames = sorted(int(s) for s in source.lang.indx[:, 0])
    recorded = [source.read({"rel_actions": (f, f + 1)})["rel_actions"][0] for f in first_frames]
    assert any(np.allclose(starts["data"][0], r) for r in recorded)  # a segment's first recorded action


def _starts(own, swapped, data, tasks):
    return {"own": np.asarray(own, float), "swapped": [np.asarray(s, float) for s in swapped],
            "data": np.asarray(data, float), "tasks": tasks}


DATA_STARTS = [[1, 0, 0, 0, 0, 0, 1], [0, 1, 0, 0, 0, 0, 1], [0, 0, 1, 0, 0, 0, -1]]
TASKS = ["open_drawer", "turn_on_led", "move_slider_left"]


def test_a_policy_that_starts_each_task_its_own_way_passes_the_segment_start_check():
    from harness.doctor.model_checks import segment_start_check

    swapped = [[d for j, d in enumerate(DATA_STARTS) if j != i] for i in range(3)]  # another instruction: another task's start
    check = segment_start_check(_starts(DATA_STARTS, swapped, DATA_STARTS, TASKS))
    assert check.status == "pass" and "cosine +1.00" in check.message


def test_a_policy_that_ignores_the_instruction_where_a_subtask_starts_is_warned():
    from harness.doctor.model_checks import segment_start_check

    same = [[0.4, 0.4, 0.4, 0, 0, 0, 1]] * 3  # the same first action whatever the instruction
    check = segment_start_check(_starts(same, [same[:2]] * 3, DATA_STARTS, TASKS))
    assert check.status == "warn" and "moves the first action by 0.00" in check.message
    assert "instruction barely changes" in check.advice
    wrong = [DATA_STARTS[1], DATA_STARTS[2], DATA_STARTS[0]]  # follows the instruction, to the wrong task's start
    check = segment_start_check(_starts(wrong, [[d for d in DATA_STARTS if d is not w] for w in wrong], DATA_STARTS, TASKS))
    assert check.status == "warn" and "does not head where the demonstrations do" in check.advice


def test_segment_starts_that_stand_still_are_not_judged_by_direction():
    """A subtask that starts with a still frame (a gripper command) has no direction to follow: a policy that
    stands still there, and heads the recorded way elsewhere, passes; before, the zero vector's cosine (0)
    counted as a miss and pulled the mean below the threshold."""
    from harness.doctor.model_checks import segment_start_check

    still = [0, 0, 0, 0, 0, 0, -1]
    data = DATA_STARTS + [still, still, still]
    own = DATA_STARTS + [[0.02, 0, 0, 0, 0, 0, -1]] * 3
    tasks = TASKS + ["close_drawer", "turn_off_led", "move_slider_right"]
    swapped = [[d for j, d in enumerate(data) if j != i][:3] for i in range(6)]
    check = segment_start_check(_starts(own, swapped, data, tasks))
    assert check.status == "pass", check.message
    assert "at the 3 where the demonstration moves" in check.message and "cosine +1.00" in check.message
    assert "at the 3 where it stands still, the predicted translation is 0.02 long" in check.message


def test_image_swaps_keep_the_instruction_and_robot_obs_and_swap_the_cameras(checkpoint, tmp_path):
    """The swapped prediction is the model's on the segment's own window with the partner's images: the same
    as predicting that window directly; the recorded paths are the segments' first chunk of actions. The data:
    two chains of the two drawer tasks, so each task has two segments."""
    import torch

    from agents.vla.checkpoint import load_checkpoint
    from harness.data.windows import NpzFrameSource, WindowDataset, WindowOptions, collate_windows
    from harness.doctor.model_checks import predict_image_swaps
    from harness.record.recorder import RecordConfig, record_dataset

    record_dataset(RecordConfig(out=str(tmp_path / "ds"), episodes=2, val_episodes=1, chain_length=2, workers=1,
                                seed=3, tasks=("open_drawer", "close_drawer")), progress=False)
    ckpt = load_checkpoint(checkpoint)
    # the 150-step model barely reads the images (on some CPUs a swap moves its plan by ~1e-6, near batch rounding):
    # noise in every weight, so that it reads them more
    torch.manual_seed(0)
    with torch.no_grad():
        for param in ckpt.model.parameters():
            param.add_(0.05 * torch.randn_like(param))
    source = NpzFrameSource(tmp_path / "ds", "training")
    swaps = predict_image_swaps(ckpt.model, ckpt.normalizer, source, 4)
    n = len(swaps["tasks"])
    assert n >= 2 and all(swaps[k].shape == (n, 3) for k in ("own", "swapped", "data", "partner_data"))
    ds = WindowDataset(source, ckpt.model.cfg.window_spec(), ckpt.normalizer, WindowOptions(augment=False, drop_short_segments=True))
    starts = {ds.window(int(i))[1]: int(i) for i in ds.segment_starts()}
    chunk = ckpt.model.cfg.chunk_size
    paths = {f: source.read({"rel_actions": (f, f + chunk)})["rel_actions"][:, :3].sum(0) for f in starts}
    first = next(f for f, p in paths.items() if np.allclose(p, swaps["data"][0]))  # the first swap's segment
    partner = next(f for f, p in paths.items() if np.allclose(p, swaps["partner_data"][0]) and f != first)
    item, other = ds[starts[first]], ds[starts[partner]]
    assert item["task"] == other["task"] == swaps["tasks"][0]
    by_hand = {**item, "rgb_static": other["rgb_static"], "rgb_gripper": other["rgb_gripper"]}

    def planned(window: dict) -> np.ndarray:
        with torch.no_grad():
            chunk_pred = ckpt.model.predict(collate_windows([window]))[0, 0].float().numpy()
        return ckpt.normalizer.denormalize(chunk_pred)[:, :3].sum(0)

    # by hand, the same plans as the doctor's (to batch rounding), and the swap moves the plan well beyond that
    error = max(np.abs(planned(by_hand) - swaps["swapped"][0]).max(), np.abs(planned(item) - swaps["own"][0]).max())
    moved = np.abs(swaps["own"][0] - swaps["swapped"][0]).max()
    assert error < 1e-5 and moved > 20 * error, (error, moved)


def test_a_policy_blind_to_the_images_is_warned():
    from harness.doctor.model_checks import image_check

    data = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    swaps = {"own": data, "swapped": data[[1, 2, 0]], "data": data, "partner_data": data[[1, 2, 0]], "tasks": TASKS}
    assert image_check(swaps).status == "pass"  # the images move the plan as far as the recorded paths differ
    blind = {**swaps, "own": np.full((3, 3), 0.5), "swapped": np.full((3, 3), 0.5)}
    check = image_check(blind)
    assert check.status == "warn" and "move the planned path (the first chunk's translation) by 0.00" in check.message
    assert "plays a task's average path" in check.advice


def test_gripper_switches_are_read_where_the_recorded_command_changes(checkpoint, recording, tmp_path, monkeypatch):
    """Every switch of the recorded gripper command inside an annotated segment is found, and its prediction is
    the model's on a window that holds it; a copy of the checkpoint told to leave the gripper out of robot_obs
    (proprio_gripper=false, the same weights) predicts the same with the last gripper action flipped."""
    import torch

    from agents.vla.checkpoint import load_checkpoint
    from harness.data.windows import WindowDataset, WindowOptions, collate_windows
    from harness.doctor.model_checks import predict_gripper_switches

    ckpt = load_checkpoint(checkpoint)
    source = open_frames(recording, "training")
    switches = predict_gripper_switches(ckpt.model, ckpt.normalizer, source, 100)
    ds = WindowDataset(source, ckpt.model.cfg.window_spec(), ckpt.normalizer, WindowOptions(augment=False, drop_short_segments=True))
    by_hand = []
    for s, e in ds.lang.indx:
        grip = source.read({"rel_actions": (int(s), int(e) + 1)})["rel_actions"][:, 6] > 0
        by_hand += [(int(s) + int(t), bool(grip[t])) for t in np.flatnonzero(grip[1:] != grip[:-1]) + 1]
    assert len(by_hand) >= 2 and switches["new"].tolist() == [new for _, new in by_hand]
    # the first switch by hand, on the window that ends at it (or its segment's first, where it comes earlier)
    frame, _ = by_hand[0]
    k = next(k for k, (s, e) in enumerate(ds.lang.indx) if s <= frame <= e)
    index = int(ds.segment_starts()[k]) + max(frame - ds.spec.window_size + 1 - int(ds.lang.indx[k, 0]), 0)
    with torch.no_grad():
        opens = ckpt.model.predict(collate_windows([ds[index]]))[0, frame - ds.window(index)[1], 0, 6] > 0.5
    assert bool(opens) == switches["own"][0]
    assert len(switches["steady_data"]) == len(switches["steady_own"]) == len(switches["steady_forced"])

    class CountedReads:  # the source, counting the reads of whole segments' actions
        def __init__(self, inner):
            self.inner, self.segments = inner, 0

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def read(self, ranges):
            self.segments += set(ranges) == {"rel_actions"}
            return self.inner.read(ranges)

    counted = CountedReads(source)
    monkeypatch.setattr("harness.doctor.model_checks.SWITCH_SEGMENTS", 1)  # this split has 4 segments
    predict_gripper_switches(ckpt.model, ckpt.normalizer, counted, 2)
    assert counted.segments == 2 < len(ds.lang.indx)  # a large split is not read whole for a few switches
    monkeypatch.undo()

    blind = _copy(checkpoint, tmp_path / "no_proprio_gripper")
    config = yaml.safe_load((blind / "config.yaml").read_text())
    config["model"]["proprio_gripper"] = False
    (blind / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    without = load_checkpoint(blind)
    switches = predict_gripper_switches(without.model, without.normalizer, source, 100)
    assert (switches["forced"] == switches["own"]).all() and (switches["steady_forced"] == switches["steady_own"]).all()


def test_a_policy_that_copies_the_last_gripper_action_is_warned():
    from harness.doctor.model_checks import gripper_switch_check

    new = np.array([False, False, True, False])  # three closes, one open
    steady = np.array([True, True, True, False] * 3)  # the command before each switch, three frames each
    decides = {"new": new, "own": new, "forced": new, "own_chunk": np.ones(4, bool),
               "steady_own": steady, "steady_forced": steady, "steady_data": steady}
    check = gripper_switch_check(decides)
    assert check.status == "pass" and "switches with it at 100% (closes 100%, opens 100%)" in check.message
    copies = {**decides, "own": ~new, "steady_forced": ~steady}
    check = gripper_switch_check(copies)
    assert check.status == "warn" and "at 0% (closes 0%, opens 0%)" in check.message
    assert "follows a flipped last gripper action at 100%" in check.message
    assert "copies the last gripper action" in check.advice
    assert "model.proprio_gripper=false" in check.advice and "model.loss.gripper_switch_weight=10" in check.advice
    no_frames_before = {**copies, **{k: steady[:0] for k in ("steady_own", "steady_forced", "steady_data")}}  # window 1
    check = gripper_switch_check(no_frames_before)  # nothing to tell a copy by: not judged as one, and no nan
    assert check.status == "pass" and "In the 0 frames before the switches the prediction matches the recorded command at 0%" in check.message
    assert gripper_switch_check({k: v[:0] for k, v in decides.items()}).status == "skip"


def with_state_probe(checkpoint: Path, dst: Path) -> Path:
    """The checkpoint with a scene-state probe (loss.state_weight 1): a zero weight, and a bias at the values
    every frame's target is then predicted as (the door half open, the lights half on, the blocks at 0.5 m)."""
    import torch

    from agents.vla.checkpoint import load_checkpoint

    folder = _copy(checkpoint, dst)
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["model"]["loss"]["state_weight"] = 1.0
    (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    path = folder / "model.safetensors"
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    hidden = load_checkpoint(checkpoint).model.backbone.hidden_size
    tensors["state_probe.weight"] = torch.zeros(15, hidden)
    tensors["state_probe.bias"] = torch.full((15,), 0.5)
    save_file(tensors, str(path), metadata=meta)
    return folder


def test_the_scene_state_probe_is_read_on_the_held_out_split(checkpoint, recording, tmp_path):
    """A checkpoint with a probe: the doctor reads it on the training and the validation split, the targets
    being the frames' scene_obs entries; one without says it has none."""
    from agents.vla.checkpoint import load_checkpoint
    from agents.vla.heads import SCENE_STATE
    from harness.doctor.model_checks import predict_scene_state

    probed = with_state_probe(checkpoint, tmp_path / "probed")
    ckpt = load_checkpoint(probed)
    source = open_frames(recording, "validation")
    states = predict_scene_state(ckpt.model, ckpt.normalizer, source, 4)
    assert states["pred"].shape == states["true"].shape and states["true"].shape[1] == 15
    assert np.allclose(states["pred"][:, :4], 0.05) and np.allclose(states["pred"][:, 4:6], 0.5)  # bias / scale
    span = (int(source.lang.indx.min()), int(source.lang.indx.max()) + 1)  # the annotated frames: one episode
    recorded = source.read({"scene_obs": span})["scene_obs"][:, SCENE_STATE[:6]]
    assert all(any(np.allclose(row, r) for r in recorded) for row in states["true"][:, :6])  # recorded frames' entries
    report = run_doctor(DoctorConfig(checkpoint=str(probed), env="none", **FAST))
    line = next(c for c in report.checks if c.name == "scene state")
    assert line.status == "pass" and "held-out frames (validation split)" in line.message, report.render()
    plain = run_doctor(DoctorConfig(checkpoint=str(checkpoint), env="none", **FAST))
    assert _status(plain)["scene state"] == "skip" and "no scene-state probe" in plain.render()


def _scene(rng: np.random.Generator, n: int = 64) -> np.ndarray:
    """n frames of the probe's 15 targets: joints, lights 0/1, block positions; the button never moves."""
    true = np.c_[rng.uniform(0, 0.3, (n, 2)), np.zeros(n), rng.uniform(0, 0.09, n), rng.integers(0, 2, (n, 2)),
                 rng.uniform(-0.3, 0.3, (n, 9))]
    return true.astype(float)


def test_a_probe_that_reads_the_training_scenes_only_is_warned():
    from harness.doctor.model_checks import scene_state_check

    rng = np.random.default_rng(0)
    seen, held = _scene(rng), _scene(rng)
    guessed = held.copy()
    guessed[:, 4] = held[:, 4].mean()  # the lightbulb: the held-out frames' mean, whatever it shows
    check = scene_state_check({"pred": seen, "true": seen}, {"pred": guessed, "true": held})
    assert check.status == "warn" and "lightbulb +0.00 (+1.00)" in check.message, check.message
    assert "button -" in check.message and "drawer +1.00 (+1.00)" in check.message
    assert "tell the lightbulb on training frames but not on held-out ones" in check.advice
    assert "model.loss.state_from=image" in check.advice  # a probe on [LRN]: read it from the image tokens
    from_images = scene_state_check({"pred": seen, "true": seen}, {"pred": guessed, "true": held}, state_from="image")
    assert from_images.status == "warn" and "state_from" not in from_images.advice and "record more scenes" in from_images.advice
    reads = scene_state_check({"pred": seen, "true": seen}, {"pred": held, "true": held})
    assert reads.status == "pass" and "64 held-out frames (validation split)" in reads.message
    none = scene_state_check({"pred": seen, "true": seen}, None)
    assert none.status == "skip" and "no held-out split" in none.message and "button" not in none.message


def test_the_feature_probe_reads_the_scene_from_every_place_a_frame_is_held(recording, tmp_path, capsys):
    """harness.doctor.probe on a scratch (CNN) checkpoint with a probe and both cameras: a fresh linear probe
    per place (the [LRN] feature, the last image token, the static camera's keypoints and vector), and the
    checkpoint's own probe with the frames' own words, CALVIN's wording and on held-out frames."""
    from dataclasses import replace as with_fields

    from agents.vla.checkpoint import load_checkpoint, save_checkpoint
    from agents.vla.config import LossConfig
    from agents.vla.model import VLAModel
    from harness.doctor.probe import main as probe_main
    from harness.doctor.probe import probe_table, read_frames
    from tests.vla_helpers import make_config, save_tiny

    folder = save_tiny("scratch", tmp_path / "scratch")
    cfg = with_fields(make_config(folder, "scratch", gripper=True, proprio=True, film=True),
                      loss=LossConfig(state_weight=1.0, state_from="image"))
    save_checkpoint(tmp_path / "ckpt", VLAModel.build(cfg, verbose=False), ActionNormalizer("clip_scale", clip=1.0))
    ckpt = load_checkpoint(tmp_path / "ckpt")
    frames = read_frames(ckpt, open_frames(recording, "training"), 3)
    n = len(frames.true)
    assert n == 3 * cfg.window_size and frames.own_probe.shape == (n, 15)
    assert set(frames.features) == {"lrn", "image token", "keypoints", "camera vector"}
    channels = ckpt.model.vlm.config.cnn_channels[-1]
    assert frames.features["keypoints"].shape == (n, 2 * channels) and np.abs(frames.features["keypoints"]).max() <= 1
    table = probe_table(ckpt, open_frames(recording, "training"), open_frames(recording, "validation"), 3)
    assert len(table) == 7 and "its own probe: training frames, CALVIN's evaluation wording" in table
    assert all(v is None or np.isfinite(v) for row in table.values() for v in row.values())
    assert probe_main([str(tmp_path / "ckpt"), "--data", str(recording), "--windows", "2", "--json"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == set(table)
    with pytest.raises(SystemExit):
        probe_main([str(tmp_path / "ckpt"), "--data", str(tmp_path)])  # no training or validation split there
    assert "no training or validation split" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        probe_main([str(tmp_path / "missing"), "--data", str(recording)])
    err = capsys.readouterr().err
    assert "missing" in err and "error:" in err  # argparse's message, not a traceback


def test_a_ridge_probe_recovers_a_linear_map():
    from harness.doctor.probe import fit_ridge

    rng = np.random.default_rng(0)
    x, w = rng.normal(size=(400, 8)) * rng.uniform(0.1, 10, 8), rng.normal(size=(8, 3))
    y = x @ w + 2.0
    new = rng.normal(size=(50, 8)) * x.std(0)
    assert np.allclose(fit_ridge(x, y, penalty=1e-6)(new), new @ w + 2.0, atol=1e-4)


@pytest.mark.parametrize("argv, message", [
    (["--scene", "E"], "env.scene: unknown scene 'E'"),
    (["--env", "none", "--env-factory", "tests.eval_agents:anything"], "--env-factory tests.eval_agents:anything would be ignored"),
])
def test_a_wrong_env_on_the_command_line_exits_2_before_anything_loads(tmp_path, capsys, argv, message):
    """--scene E was taken, then raised a traceback once the checkpoint and data were read; an env factory beside
    --env none was dropped without a word."""
    with pytest.raises(SystemExit) as exit_:
        doctor_main([str(tmp_path / "no-checkpoint-needed"), *argv])
    assert exit_.value.code == 2 and message in capsys.readouterr().err
