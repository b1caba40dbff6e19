"""env=calvin on the real calvin_env: the contract (observations, reset, actions, errors), what its reset
carries over, the client-id trap, and what differs between calvin_env 797142c and CALVIN's pinned 1431a46.

Skipped, saying so in pytest's header, when calvin_env is not installed (tests/conftest.py).
"""

from __future__ import annotations

import gc
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pybullet as p
import pytest

from harness.envs import make_env
from harness.sim.layout import NEUTRAL_ROBOT_OBS, NEUTRAL_TCP_EULER, NEUTRAL_TCP_POS
from harness.tasks import initial_state
from tests.conftest import CALVIN_ENV_ROOT

pytestmark = pytest.mark.calvin_env
ROOT = Path(__file__).resolve().parent.parent
HOLD = np.array([0.0, 0, 0, 0, 0, 0, 1])
CONDITIONS = [  # drawer, slider, lights and blocks in different places
    {"led": 1, "lightbulb": 1, "slider": "left", "drawer": "open", "red_block": "slider_left",
     "blue_block": "table", "pink_block": "slider_right", "grasped": 0},
    {"led": 0, "lightbulb": 0, "slider": "right", "drawer": "closed", "red_block": "table",
     "blue_block": "slider_left", "pink_block": "table", "grasped": 0},
]


@pytest.fixture
def env():
    """Both cameras, as an agent that looks would have it. One calvin_env at a time, each test its own: calvin_env
    must be its process's first PyBullet client (harness.envs.calvin)."""
    e = make_env("calvin", scene="D")
    yield e
    e.close()


@pytest.fixture
def blind():
    e = make_env("calvin", scene="D", cameras=())
    yield e
    e.close()


def test_observation_contract(env):
    obs = env.reset(NEUTRAL_ROBOT_OBS, initial_state(CONDITIONS[0], "D")[1])
    assert set(obs) == {"rgb_obs", "depth_obs", "robot_obs", "scene_obs"}
    assert obs["rgb_obs"]["rgb_static"].shape == (200, 200, 3) and obs["rgb_obs"]["rgb_static"].dtype == np.uint8
    assert obs["rgb_obs"]["rgb_gripper"].shape == (84, 84, 3) and obs["rgb_obs"]["rgb_gripper"].dtype == np.uint8
    assert obs["depth_obs"]["depth_static"].shape == (200, 200) and obs["depth_obs"]["depth_static"].dtype == np.float32
    assert obs["depth_obs"]["depth_gripper"].shape == (84, 84) and obs["depth_obs"]["depth_gripper"].dtype == np.float32
    assert obs["robot_obs"].shape == (15,) and obs["robot_obs"].dtype == np.float64
    assert obs["scene_obs"].shape == (24,) and obs["scene_obs"].dtype == np.float64
    assert 3.0 < float(np.median(obs["depth_obs"]["depth_static"])) < 6.5  # metric depth, table ~4 m away
    assert obs["rgb_obs"]["rgb_static"].std() > 20
    out = env.step(HOLD)
    assert len(out) == 4 and out[1] == 0 and out[2] is False and set(out[3]) == {"robot_info", "scene_info"}
    info = out[3]
    assert set(info["robot_info"]) >= {"tcp_pos", "tcp_orn", "gripper_action", "uid", "contacts"}
    assert set(info["scene_info"]["movable_objects"]) == {"block_red", "block_blue", "block_pink"}
    assert set(info["scene_info"]["doors"]) == {"base__slide", "base__drawer"}
    d = env.description
    assert (d.backend, d.scene, d.renderer, d.cameras) == ("calvin", "D", "tiny", ("static", "gripper"))
    assert d.version.startswith("calvin_env ") and "unknown" not in d.version


def test_without_cameras_renders_nothing_inside_and_the_cameras_are_back_after(env):
    """The single-task setup's steps (harness/eval/rollout.py). That the states are those of rendered steps is
    tested on the built-in scene (tests/test_eval_rollout.py), where a reset is exact; calvin_env's reset keeps
    contacts, and two rendered runs from the same state already differ by up to ~0.1 mm."""
    renders = []
    for camera in env._env.cameras:
        render = camera.render
        camera.render = lambda render=render: renders.append(1) or render()
    env.reset(NEUTRAL_ROBOT_OBS, initial_state(CONDITIONS[0], "D")[1])
    assert len(renders) == 2  # the counter counts: the reset's observation rendered both cameras
    renders.clear()
    with env.without_cameras():
        for _ in range(3):
            obs = env.step(HOLD)[0]
            assert obs["rgb_obs"] == {} and obs["depth_obs"] == {} and obs["robot_obs"].shape == (15,)
    assert renders == []
    assert set(env.step(HOLD)[0]["rgb_obs"]) == {"rgb_static", "rgb_gripper"} and len(renders) == 2


def test_reset_reaches_the_given_state(blind):
    for condition in CONDITIONS:
        robot_obs, scene_obs = initial_state(condition, "D")
        obs = blind.reset(robot_obs, scene_obs)
        assert np.allclose(obs["robot_obs"][:14], robot_obs[:14], atol=1e-4)
        assert np.allclose(obs["scene_obs"][:6], scene_obs[:6], atol=1e-6)  # joints and lights
        for k in range(3):  # blocks, after the one physics step calvin_env's reset takes
            pos, euler = obs["scene_obs"][6 + 6 * k: 9 + 6 * k], obs["scene_obs"][9 + 6 * k: 12 + 6 * k]
            assert np.allclose(pos, scene_obs[6 + 6 * k: 9 + 6 * k], atol=1e-3)
            assert np.allclose(np.cos(euler - scene_obs[9 + 6 * k: 12 + 6 * k]), 1.0, atol=1e-5)
    obs = blind.reset(NEUTRAL_ROBOT_OBS, np.zeros(24))
    assert np.linalg.norm(obs["robot_obs"][:3] - np.array(NEUTRAL_TCP_POS)) < 1e-4
    assert np.allclose(obs["robot_obs"][3:6], NEUTRAL_TCP_EULER, atol=1e-4)
    with pytest.raises(ValueError, match="scene_obs must have shape"):
        blind.reset(NEUTRAL_ROBOT_OBS, np.zeros(23))


def test_relative_actions(blind):
    start = blind.reset(NEUTRAL_ROBOT_OBS, np.zeros(24))["robot_obs"]
    for _ in range(10):
        obs = blind.step(np.array([1.0, 0, 0, 0, 0, 0, 1]))[0]
    assert 0.15 < obs["robot_obs"][0] - start[0] < 0.2  # calvin_env: 0.174 m after 10 full-scale steps
    assert abs(obs["robot_obs"][1] - start[1]) < 0.01
    for _ in range(10):
        obs = blind.step(np.array([0, 0, 0, 0, 0, 1.0, -1]))[0]
    assert 0.3 < obs["robot_obs"][5] - start[5] < 0.55  # 10 x 0.05 rad of yaw, still catching up
    assert obs["robot_obs"][6] < 0.01 and obs["robot_obs"][14] == -1  # closed


def test_absolute_actions(blind):
    start = blind.reset(NEUTRAL_ROBOT_OBS, np.zeros(24))["robot_obs"]
    target = start[:3] - (0, 0, 0.05)
    for _ in range(15):
        obs = blind.step((target, start[3:6], 1))[0]
    assert np.linalg.norm(obs["robot_obs"][:3] - target) < 0.005  # calvin_env: reached in 15 steps
    quat = p.getQuaternionFromEuler(start[3:6].tolist())
    for _ in range(15):
        obs = blind.step({"type": "cartesian_abs", "action": np.r_[start[:3], quat, -1]})[0]
    assert np.linalg.norm(obs["robot_obs"][:3] - start[:3]) < 0.005 and obs["robot_obs"][14] == -1


def test_relative_actions_after_absolute_ones_add_to_the_target_before_them(blind):
    """Absolute actions leave calvin_env's relative target alone (only relative_to_absolute moves it): zero
    relative actions after reaching a pose 5 cm lower take the arm back up to the reset pose. The built-in
    scene does the same (tests/test_env_builtin.py)."""
    start = blind.reset(NEUTRAL_ROBOT_OBS, np.zeros(24))["robot_obs"]
    for _ in range(15):
        obs = blind.step((start[:3] - (0, 0, 0.05), start[3:6], 1))[0]
    assert obs["robot_obs"][2] < start[2] - 0.045
    for _ in range(15):
        obs = blind.step(HOLD)[0]
    assert np.linalg.norm(obs["robot_obs"][:3] - start[:3]) < 0.005


@pytest.mark.parametrize("action, message", [
    (np.zeros(8), "7 numbers"),
    (np.array([0, 0, 0, 0, 0, 0, 0.2]), "exactly 1"),
    (np.array([np.nan, 0, 0, 0, 0, 0, 1]), "finite"),
    (((0, 0), (0, 0, 0), 1), "position"),
    ({"type": "joint_rel", "action": np.zeros(8)}, "cartesian_rel"),
])
def test_bad_actions_raise_value_error_and_change_nothing(blind, action, message):
    before = blind.reset(NEUTRAL_ROBOT_OBS, np.zeros(24))
    with pytest.raises(ValueError, match=message):
        blind.step(action)
    assert np.array_equal(blind.get_obs()["robot_obs"], before["robot_obs"])


def test_reset_keeps_the_last_gripper_action_by_default(blind):
    """calvin_env's reset, which CALVIN's published numbers were measured with (docs/EVALUATION.md)."""
    _, scene_obs = initial_state(CONDITIONS[1], "D")
    blind.reset(NEUTRAL_ROBOT_OBS, scene_obs)
    blind.step(np.array([0, 0, 0, 0, 0, 0, -1.0]))
    obs = blind.reset(NEUTRAL_ROBOT_OBS, scene_obs)  # robot_obs[14] = 1 asks for an open gripper
    assert obs["robot_obs"][14] == -1
    blind.close()  # one calvin_env at a time
    with make_env("calvin", scene="D", cameras=(), exact_reset=True) as exact:
        exact.reset(NEUTRAL_ROBOT_OBS, scene_obs)
        exact.step(np.array([0, 0, 0, 0, 0, 0, -1.0]))
        assert exact.reset(NEUTRAL_ROBOT_OBS, scene_obs)["robot_obs"][14] == 1
        assert exact.description.version.endswith("exact_reset")


def test_block_velocities_do_not_survive_calvins_reset(blind):
    """calvin_env sets block poses with resetBasePositionAndOrientation, which zeroes their velocities:
    a block thrown before a reset lies still after it."""
    _, scene_obs = initial_state(CONDITIONS[1], "D")
    blind.reset(NEUTRAL_ROBOT_OBS, scene_obs)
    red = blind._env.scene.movable_objects[0]
    assert red.name == "block_red"
    p.resetBaseVelocity(red.uid, (0.5, 0, 0), (0, 0, 5), physicsClientId=blind._env.cid)
    blind.reset(NEUTRAL_ROBOT_OBS, scene_obs)
    for _ in range(3):
        obs = blind.step(HOLD)[0]
    assert np.allclose(obs["scene_obs"][6:9], scene_obs[6:9], atol=1e-3)
    assert np.allclose(np.cos(obs["scene_obs"][9:12] - scene_obs[9:12]), 1.0, atol=1e-5)


def test_closing_an_env_leaves_the_next_one_connected():
    """calvin_env's __del__ closes again after close(); PyBullet reuses client ids, so without the
    adapter disowning its id, a closed env's garbage collection would disconnect the next env."""
    first = make_env("calvin", scene="D", cameras=())
    inner = first._env  # held elsewhere (a traceback, a cycle): its __del__ runs later
    first.close()
    second = make_env("calvin", scene="D", cameras=())
    assert second._env.cid == inner.cid == 0  # PyBullet gave the id out again
    del inner
    gc.collect()  # calvin_env's __del__ of the first env runs now
    try:
        assert second.reset(NEUTRAL_ROBOT_OBS, np.zeros(24))["robot_obs"].shape == (15,)
        second.step(HOLD)
    finally:
        second.close()


def test_calvin_env_refuses_to_be_a_second_pybullet_client():
    """calvin_env sends some calls to PyBullet client 0 whatever its own client is (its robot's base and
    constraint, the EGL plugin, IK): built beside another env it moved and rendered differently, silently.
    The adapter refuses, naming the reason, before anything is built; once the other env is closed it builds."""
    reference = make_env("calvin", scene="D")
    try:
        obs = reference.reset()
        for _ in range(3):
            obs = reference.step(np.array([0.5, 0, 0, 0, 0, 0, 1.0]))[0]
        alone = (obs["robot_obs"].copy(), obs["rgb_obs"]["rgb_gripper"].copy())
    finally:
        reference.close()
    other = p.connect(p.DIRECT)  # any other client: a built-in env, another calvin_env
    try:
        with pytest.raises(RuntimeError, match="calvin_env must be the first PyBullet client of its process"):
            make_env("calvin", scene="D")
    finally:
        p.disconnect(other)
    with make_env("calvin", scene="D") as env:
        obs = env.reset()
        for _ in range(3):
            obs = env.step(np.array([0.5, 0, 0, 0, 0, 0, 1.0]))[0]
        np.testing.assert_array_equal(obs["robot_obs"], alone[0])
        np.testing.assert_array_equal(obs["rgb_obs"]["rgb_gripper"], alone[1])


def test_an_archive_install_is_named(monkeypatch):
    import git

    import calvin_env.envs.play_table_env as module

    def not_a_clone(path):
        raise git.InvalidGitRepositoryError(str(path))

    monkeypatch.setattr(module, "get_git_commit_hash", not_a_clone)
    with pytest.raises(RuntimeError, match="(?s)not installed from a git clone.*install_calvin_env.sh"):
        make_env("calvin", scene="D", cameras=())


@pytest.fixture(scope="module")
def checkouts(tmp_path_factory) -> dict[str, Path]:
    """calvin_env 797142c and CALVIN's pinned 1431a46 beside the installed one (whatever commit that is),
    checked out from the installed clone with the install script."""
    if not (CALVIN_ENV_ROOT / ".git").exists():
        pytest.skip(f"calvin_env at {CALVIN_ENV_ROOT} is not a git clone; cannot check out other commits from it")
    found = {}
    for commit in ("797142c", "1431a46"):
        dest = tmp_path_factory.mktemp("calvin_env") / f"calvin_env_{commit}"
        subprocess.run(["bash", str(ROOT / "scripts" / "install_calvin_env.sh"), "--checkout-only", "--commit", commit,
                        "--dest", str(dest), str(CALVIN_ENV_ROOT)], check=True, capture_output=True)
        found[commit] = dest
    return found


def _probe(pythonpath: list[Path], backend: str = "calvin", **kwargs) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, [*pythonpath, ROOT]))}
    out = subprocess.run([sys.executable, str(ROOT / "tests" / "calvin_versions.py"), backend, json.dumps(kwargs)],
                         env=env, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(next(line for line in out.stdout.splitlines() if line.startswith("{")))


def test_797142c_and_1431a46_differ_where_the_docs_say(checkouts):
    head, pinned = _probe([checkouts["797142c"]]), _probe([checkouts["1431a46"]])
    assert (head["version"], pinned["version"]) == ("calvin_env 797142c", "calvin_env 1431a46")
    # The LED: after a reset with it on, the first press turns it off at 797142c; at 1431a46 it takes two.
    assert head["presses_to_turn_off_led"] == 1 and pinned["presses_to_turn_off_led"] == 2
    # 1431a46 scaled the caller's action array in place; the adapter passes a copy.
    assert not head["raw_step_scales_in_place"] and pinned["raw_step_scales_in_place"]
    assert head["adapter_keeps_action"] and pinned["adapter_keeps_action"]
    # The built-in scene reproduces both (legacy_button_reset=True: 1431a46's LED).
    assert _probe([], "builtin")["presses_to_turn_off_led"] == 1
    assert _probe([], "builtin", legacy_button_reset=True)["presses_to_turn_off_led"] == 2
