"""The built-in scene keeps calvin_env's observation/action contract (docs/CALVIN.md#observations, #actions, #reset)."""

from __future__ import annotations

import numpy as np
import pytest

from harness.envs import make_env
from harness.sim.layout import NEUTRAL_ROBOT_OBS, NEUTRAL_TCP_EULER, NEUTRAL_TCP_POS, TABLE_LINKS

STAY_OPEN = np.array([0.0, 0, 0, 0, 0, 0, 1])


@pytest.fixture(scope="module")
def env():
    e = make_env("builtin", scene="D")
    yield e
    e.close()


@pytest.fixture(scope="module")
def blind_env():
    e = make_env("builtin", scene="D", cameras=())
    yield e
    e.close()


def test_observation_contract(env):
    obs = env.reset()
    assert obs["rgb_obs"]["rgb_static"].shape == (200, 200, 3) and obs["rgb_obs"]["rgb_static"].dtype == np.uint8
    assert obs["rgb_obs"]["rgb_gripper"].shape == (84, 84, 3) and obs["rgb_obs"]["rgb_gripper"].dtype == np.uint8
    assert obs["depth_obs"]["depth_static"].shape == (200, 200) and obs["depth_obs"]["depth_static"].dtype == np.float32
    assert obs["depth_obs"]["depth_gripper"].shape == (84, 84) and obs["depth_obs"]["depth_gripper"].dtype == np.float32
    assert obs["robot_obs"].shape == (15,) and obs["robot_obs"].dtype == np.float64
    assert obs["scene_obs"].shape == (24,) and obs["scene_obs"].dtype == np.float64
    # metric depth: the static camera is ~4.2 m from the table (CALVIN sees about 3.8-6.2 m)
    assert 3.0 < float(np.median(obs["depth_obs"]["depth_static"])) < 6.5
    # the images show something: the table is not a flat colour
    assert obs["rgb_obs"]["rgb_static"].std() > 20 and obs["rgb_obs"]["rgb_gripper"].std() > 5
    out = env.step(STAY_OPEN)
    assert len(out) == 4 and out[1] == 0 and out[2] is False and set(out[3]) == {"robot_info", "scene_info"}


def test_neutral_pose_matches_calvin(blind_env):
    obs = blind_env.reset(robot_obs=NEUTRAL_ROBOT_OBS, scene_obs=np.zeros(24))
    assert np.linalg.norm(obs["robot_obs"][:3] - np.array(NEUTRAL_TCP_POS)) < 0.01  # within 1 cm (it is ~1e-5)
    assert np.allclose(obs["robot_obs"][3:6], NEUTRAL_TCP_EULER, atol=1e-3)
    assert obs["robot_obs"][6] == pytest.approx(0.08, abs=1e-6)


def test_cameras_off_and_resized():
    with make_env("builtin", scene="A", cameras=()) as e:
        obs = e.reset()
        assert obs["rgb_obs"] == {} and obs["depth_obs"] == {}
        assert e.description.renderer == "none"
    with make_env("builtin", scene="B", cameras=("gripper",), camera_sizes={"gripper": 64}) as e:
        obs = e.reset()
        assert set(obs["rgb_obs"]) == {"rgb_gripper"} and obs["rgb_obs"]["rgb_gripper"].shape == (64, 64, 3)
        assert e.description.renderer == "tiny" and e.description.cameras == ("gripper",)


def test_reset_roundtrips_a_recorded_state(blind_env):
    rng = np.random.default_rng(0)
    blind_env.reset()
    for _ in range(40):
        action = np.r_[rng.uniform(-1, 1, 6), rng.choice([-1.0, 1.0])]
        obs, *_ = blind_env.step(action)
    recorded_robot, recorded_scene = obs["robot_obs"].copy(), obs["scene_obs"].copy()
    blind_env.reset()  # somewhere else entirely
    restored = blind_env.reset(robot_obs=recorded_robot, scene_obs=recorded_scene)
    assert np.allclose(restored["robot_obs"][:14], recorded_robot[:14], atol=2e-3)
    assert np.allclose(restored["scene_obs"], recorded_scene, atol=2e-3)


def test_same_start_and_actions_give_same_observations(blind_env):
    rng = np.random.default_rng(1)
    actions = [np.r_[rng.uniform(-1, 1, 6), rng.choice([-1.0, 1.0])] for _ in range(30)]
    start = blind_env.reset()
    robot0, scene0 = start["robot_obs"].copy(), start["scene_obs"].copy()

    def rollout(env):
        env.reset(robot_obs=robot0, scene_obs=scene0)
        return np.stack([np.r_[env.step(a)[0]["robot_obs"], env.get_obs()["scene_obs"]] for a in actions])

    first = rollout(blind_env)
    for _ in range(5):  # some unrelated history in between
        blind_env.step(np.r_[rng.uniform(-1, 1, 6), 1.0])
    second = rollout(blind_env)
    with make_env("builtin", scene="D", cameras=()) as fresh:
        third = rollout(fresh)
    assert np.array_equal(first, second)
    assert np.array_equal(first, third)


def test_same_state_gives_same_images(env):
    obs = env.reset()
    a = env.reset(robot_obs=obs["robot_obs"], scene_obs=obs["scene_obs"])
    env.step(np.array([1.0, 1, 0, 0, 0, 0, -1]))
    b = env.reset(robot_obs=obs["robot_obs"], scene_obs=obs["scene_obs"])
    assert np.array_equal(a["rgb_obs"]["rgb_static"], b["rgb_obs"]["rgb_static"])
    assert np.array_equal(a["rgb_obs"]["rgb_gripper"], b["rgb_obs"]["rgb_gripper"])


@pytest.mark.parametrize(
    "action, message",
    [
        (np.zeros(6), "7 numbers"),
        (np.zeros(8), "7 numbers"),
        (np.array([np.nan, 0, 0, 0, 0, 0, 1]), "finite"),
        (np.array([0, np.inf, 0, 0, 0, 0, 1]), "finite"),
        (np.array([0, 0, 0, 0, 0, 0, 0.5]), "exactly 1"),
        (((0, 0), (0, 0, 0), 1), "3 numbers"),
        (((0.1, 0, 0.5), (0, 0), 1), "3 or 4 numbers"),
        (((0.1, 0, 0.5), (0, 0, 0, 0), 1), "quaternion xyzw must not be zero"),
        (((0.1, 0, 0.5), (0, 0, 0), np.array([1.0, 1.0])), "1 numbers"),
        ({"type": "joint_abs", "action": np.zeros(8)}, "cartesian_rel"),
    ],
)
def test_bad_actions_raise_value_error(blind_env, action, message):
    with pytest.raises(ValueError, match=message):
        blind_env.step(action)


def test_bad_constructor_and_reset_arguments(blind_env):
    with pytest.raises(ValueError, match="unknown scene 'E'"):
        make_env("builtin", scene="E")
    with pytest.raises(ValueError, match="unknown camera"):
        make_env("builtin", cameras=("tactile",))
    with pytest.raises(ValueError, match="unknown env backend"):
        make_env("mujoco")
    with pytest.raises(ValueError, match=r"robot_obs must have shape \(15,\)"):
        blind_env.reset(robot_obs=np.zeros(14), scene_obs=np.zeros(24))
    with pytest.raises(ValueError, match=r"scene_obs must have shape \(24,\)"):
        blind_env.reset(robot_obs=NEUTRAL_ROBOT_OBS, scene_obs=np.zeros(23))
    for index, name, value in ((4, "lightbulb", 0.7), (5, "led", 2.0), (5, "led", -1.0)):
        with pytest.raises(ValueError, match=rf"scene_obs\[{index}\] \({name}\) must be 0 \(off\) or 1 \(on\)"):
            blind_env.reset(robot_obs=NEUTRAL_ROBOT_OBS, scene_obs=np.r_[np.zeros(index), value, np.zeros(23 - index)])


def test_an_absolute_action_split_from_one_array_is_taken_as_calvin_env_takes_it(blind_env):
    """tuple(np.split(a, [3, 6])) gives a 1-element gripper array; calvin_env unwraps it (it was refused)."""
    start = blind_env.reset(robot_obs=NEUTRAL_ROBOT_OBS, scene_obs=blind_env.get_obs()["scene_obs"])["robot_obs"]
    pose = np.r_[start[:3] - (0, 0, 0.05), start[3:6], -1.0]
    for _ in range(15):
        obs, *_ = blind_env.step(tuple(np.split(pose, [3, 6])))
    assert obs["robot_obs"][2] < start[2] - 0.045 and obs["robot_obs"][14] == -1


def test_relative_actions_are_scaled_not_clipped(blind_env):
    blind_env.reset(robot_obs=NEUTRAL_ROBOT_OBS, scene_obs=blind_env.get_obs()["scene_obs"])
    before = blind_env.robot.target.pos.copy()
    blind_env.step(np.array([2.5, 0, 0, 0, 0, 0, 1]))
    assert blind_env.robot.target.pos[0] - before[0] == pytest.approx(2.5 * 0.02)
    action = np.array([0.5, 0, 0, 0, 0, 0, 1])
    blind_env.step(action)
    assert action[0] == 0.5  # the caller's array is never scaled in place


def test_relative_actions_after_absolute_ones_add_to_the_target_before_them(blind_env):
    """As calvin_env (tests/test_env_calvin_real.py): absolute actions leave the relative target alone, so zero
    relative actions after reaching a pose 5 cm lower take the arm back up (it stayed down)."""
    start = blind_env.reset(robot_obs=NEUTRAL_ROBOT_OBS, scene_obs=blind_env.get_obs()["scene_obs"])["robot_obs"]
    for _ in range(15):
        obs, *_ = blind_env.step((start[:3] - (0, 0, 0.05), start[3:6], 1))
    assert obs["robot_obs"][2] < start[2] - 0.045
    for _ in range(15):
        obs, *_ = blind_env.step(STAY_OPEN)
    assert np.linalg.norm(obs["robot_obs"][:3] - start[:3]) < 0.005


def test_relative_motion_rate_matches_calvin(blind_env):
    """docs/CALVIN.md#actions: a full-scale +x relative action moves the TCP 0.174 m in 10 steps."""
    obs = blind_env.reset(robot_obs=NEUTRAL_ROBOT_OBS, scene_obs=np.r_[np.zeros(6), blind_env.get_obs()["scene_obs"][6:]])
    x0 = obs["robot_obs"][0]
    for _ in range(10):
        obs, *_ = blind_env.step(np.array([1.0, 0, 0, 0, 0, 0, 1]))
    assert obs["robot_obs"][0] - x0 == pytest.approx(0.174, abs=0.01)


def test_gripper_dynamics_match_calvin(blind_env):
    """docs/GEOMETRY.md#physics: opening width after each of 5 closing steps in free air."""
    blind_env.reset(robot_obs=NEUTRAL_ROBOT_OBS, scene_obs=np.r_[np.zeros(6), blind_env.get_obs()["scene_obs"][6:]])
    widths = [blind_env.step(np.array([0.0, 0, 0, 0, 0, 0, -1]))[0]["robot_obs"][6] for _ in range(5)]
    assert np.allclose(widths, [0.034, 0.015, 0.006, 0.003, 0.001], atol=0.003)
    assert blind_env.get_obs()["robot_obs"][14] == -1


def test_info_has_calvin_layout(blind_env):
    blind_env.reset()
    info = blind_env.get_info()
    robot, scene = info["robot_info"], info["scene_info"]
    assert robot["uid"] == 0 and len(robot["tcp_orn"]) == 4 and len(robot["arm_joint_states"]) == 7
    table = scene["fixed_objects"]["table"]
    assert table["uid"] == 5 and table["links"] == TABLE_LINKS
    assert [b["uid"] for b in scene["movable_objects"].values()] == [2, 3, 4]
    assert list(scene["movable_objects"]) == ["block_red", "block_blue", "block_pink"]
    # every block rests on something: a contact row names the other body (c[2]) and its link (c[4])
    for block in scene["movable_objects"].values():
        assert block["contacts"] and all(c[2] == table["uid"] for c in block["contacts"])
        surfaces = {TABLE_LINKS[k] for k in ("base_link", "plank_link", "slide_link")}  # front slider corners touch the door
        assert {c[4] for c in block["contacts"]} <= surfaces
    assert set(scene["doors"]) == {"base__slide", "base__drawer"}
    assert set(scene["lights"]) == {"lightbulb", "led"}


def test_scene_obs_block_order_follows_the_scene():
    """docs/CALVIN.md#observations: A orders blocks pink, blue, red in scene_obs; D red, blue, pink."""
    with make_env("builtin", scene="A", cameras=()) as e:
        e.reset()
        info, obs = e.get_info(), e.get_obs()
        assert list(info["scene_info"]["movable_objects"]) == ["block_pink", "block_blue", "block_red"]
        assert np.allclose(obs["scene_obs"][6:9], info["scene_info"]["movable_objects"]["block_pink"]["current_pos"])


def test_switch_and_button_drive_the_lights(blind_env):
    scene = np.r_[np.zeros(6), blind_env.get_obs()["scene_obs"][6:]]
    blind_env.reset(scene_obs=scene)
    scene_obj = blind_env.scene
    import pybullet as p

    def set_joint(index, q):
        p.resetJointState(scene_obj.table, index, q, physicsClientId=blind_env.cid)

    set_joint(TABLE_LINKS["switch_link"], 0.0441)
    obs, *_ = blind_env.step(STAY_OPEN)
    assert obs["scene_obs"][4] == 1  # bulb on above the middle
    set_joint(TABLE_LINKS["switch_link"], 0.0439)
    obs, *_ = blind_env.step(STAY_OPEN)
    assert obs["scene_obs"][4] == 0  # and off again below it
    # the LED toggles once per press; holding the button does not toggle it again
    set_joint(TABLE_LINKS["button_link"], 0.02)
    p.setJointMotorControl2(scene_obj.table, TABLE_LINKS["button_link"], p.POSITION_CONTROL, targetPosition=0.02, force=100, physicsClientId=blind_env.cid)
    obs, *_ = blind_env.step(STAY_OPEN)
    assert obs["scene_obs"][5] == 1
    obs, *_ = blind_env.step(STAY_OPEN)
    assert obs["scene_obs"][5] == 1
    p.setJointMotorControl2(scene_obj.table, TABLE_LINKS["button_link"], p.POSITION_CONTROL, targetPosition=0.0, force=4, physicsClientId=blind_env.cid)
    for _ in range(10):
        obs, *_ = blind_env.step(STAY_OPEN)
    assert obs["scene_obs"][5] == 1 and obs["scene_obs"][2] < 0.001


def test_first_press_after_reset_with_led_on():
    """HEAD turns the LED off with the first press; calvin_env 1431a46 (legacy) needs a second one."""
    for legacy, expected in ((False, 0), (True, 1)):
        with make_env("builtin", cameras=(), legacy_button_reset=legacy) as e:
            scene = np.r_[np.zeros(6), e.get_obs()["scene_obs"][6:]]
            scene[5] = 1
            e.reset(scene_obs=scene)
            e.scene.lights.update(button_q=0.02, switch_q=0.0)
            assert e.scene.lights.led == expected


def test_cached_static_layer_draws_the_same_picture(env):
    """The static camera composites a cached furniture layer with the moving bodies; the picture must
    be the one a single full draw gives (up to depth ties on a handful of pixels)."""
    from harness.sim.cameras import CameraRig

    full_rig = CameraRig(env.cid, ("static",), None, "tiny")  # no layer: draws everything at once
    rng = np.random.default_rng(3)
    obs = env.reset()
    states = []
    for drawer, door, switch, led in ((0.0, 0.0, 0.0, 0), (0.22, 0.28, 0.088, 1), (0.1, 0.14, 0.0, 1)):
        scene = obs["scene_obs"].copy()
        scene[[0, 1, 3, 4, 5]] = door, drawer, switch, float(switch > 0.044), led
        states.append(scene)
    for scene in states:
        env.reset(scene_obs=scene)
        for _ in range(8):  # the arm moves over the table in front of the furniture
            env.step(np.r_[rng.uniform(-1, 1, 3), 0, 0, 0, 1.0])
            pose = env.robot.tcp_pose()
            layered, layered_depth = env.cameras.render(*pose, names=("static",))
            env.cameras.render(*pose, names=("gripper",))  # shows every shape again
            full, full_depth = full_rig.render(*pose)
            differ = (layered["rgb_static"] != full["rgb_static"]).any(-1)
            assert differ.sum() <= 8, f"{differ.sum()} pixels differ"
            assert np.abs(layered_depth["depth_static"] - full_depth["depth_static"])[~differ].max() < 1e-5
