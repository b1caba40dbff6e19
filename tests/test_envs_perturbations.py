"""Perturbation axes (harness/envs/perturbations.py, the language axis in harness/tasks/paraphrases.py): each
changes what it claims and nothing else; level 0 is the plain env; draws depend on the chain's seed only."""

from __future__ import annotations

import numpy as np
import pytest

from harness.envs.builtin import BuiltinEnv
from harness.envs.perturbations import AXES, ENV_AXES, Perturbations, PerturbedEnv, gaussian_blur
from harness.eval.specs import EnvConfig
from harness.strict_config import from_mapping
from harness.tasks import TASK_NAMES, benchmark_chains, eval_instruction, initial_state, training_instructions
from harness.tasks.paraphrases import add_typos, heldout_instructions, perturbed_instruction, reorder_words

ACTIONS = np.array([[0.6, -0.3, -0.4, 0.0, 0.0, 0.2, 1.0]] * 4 + [[0.0, 0.5, 0.0, 0.1, 0.0, 0.0, -1.0]] * 4)
VISUAL = ("camera", "image_noise", "blur")
DYNAMICS = ("action_noise",)


def rollout(perturb: Perturbations, seed: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The static and gripper images after the chain's reset, and the state trajectory under ACTIONS."""
    env = EnvConfig(perturb=perturb).build(cameras=("static", "gripper"))
    try:
        if hasattr(env, "new_chain"):
            env.new_chain(seed)
        robot_obs, scene_obs = initial_state(benchmark_chains(1)[0][0], "D")
        obs = env.reset(robot_obs=robot_obs, scene_obs=scene_obs)
        images = np.concatenate([obs["rgb_obs"]["rgb_static"].ravel(), obs["rgb_obs"]["rgb_gripper"].ravel()])
        start = np.concatenate([obs["robot_obs"], obs["scene_obs"]])
        states = [np.concatenate([o["robot_obs"], o["scene_obs"]]) for o in (env.step(a)[0] for a in ACTIONS)]
        return images, start, np.array(states)
    finally:
        env.close()


@pytest.fixture(scope="module")
def plain():
    return rollout(Perturbations())


def test_level_zero_builds_the_plain_env_and_keeps_the_run_key():
    env = EnvConfig().build(cameras=())
    try:
        assert isinstance(env, BuiltinEnv) and "perturbations" not in env.description.to_dict()
    finally:
        env.close()
    assert "perturb" not in EnvConfig().to_dict()  # earlier run folders resume
    assert EnvConfig(perturb=Perturbations(blur=2)).to_dict()["perturb"] == {"blur": 2}


@pytest.mark.parametrize("axis", VISUAL)
def test_visual_axes_change_the_images_and_not_the_physics(plain, axis):
    images, start, states = rollout(Perturbations(**{axis: 2}))
    assert not np.array_equal(images, plain[0])
    np.testing.assert_array_equal(start, plain[1])
    np.testing.assert_array_equal(states, plain[2])


@pytest.mark.parametrize("axis", DYNAMICS)
def test_dynamics_axes_change_the_trajectory_and_not_the_render(plain, axis):
    images, start, states = rollout(Perturbations(**{axis: 1}))
    np.testing.assert_array_equal(images, plain[0])
    np.testing.assert_array_equal(start, plain[1])
    assert not np.array_equal(states, plain[2])


def test_action_noise_turns_euler_and_quaternion_orientations_alike():
    """An absolute action's orientation gets the same noise whether given as euler angles or as a quaternion
    (a quaternion got position noise only: the same level was a weaker perturbation for such agents)."""
    from harness.spatial import euler_to_quat, quat_to_euler

    env = EnvConfig(perturb=Perturbations(action_noise=3)).build(cameras=())
    try:
        pos, euler = np.array([0.1, -0.2, 0.5]), np.array([3.0, -0.1, 1.5])
        env.new_chain(5)
        by_euler = env._noisy((pos, euler, 1))
        env.new_chain(5)
        by_quat = env._noisy((pos, euler_to_quat(euler), 1))
    finally:
        env.close()
    assert not np.allclose(by_euler[1], euler)
    np.testing.assert_allclose(by_quat[0], by_euler[0])
    np.testing.assert_allclose(quat_to_euler(by_quat[1]), by_euler[1], atol=1e-9)


def test_start_pose_moves_the_arm_only(plain):
    _, start, _ = rollout(Perturbations(start_pose=1))
    assert not np.array_equal(start[7:14], plain[1][7:14])  # the arm's joints
    bound = AXES["start_pose"].value(1)
    assert np.all(np.abs(start[7:14] - plain[1][7:14]) <= bound + 1e-6)
    np.testing.assert_array_equal(start[15:], plain[1][15:])  # the scene


def test_draws_depend_on_the_chain_seed_only():
    perturb = Perturbations(camera=1, image_noise=1, action_noise=1, start_pose=1)
    a, b, c = rollout(perturb, seed=7), rollout(perturb, seed=7), rollout(perturb, seed=8)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[2], c[2])
    # an axis's draws do not depend on which other axes are on
    np.testing.assert_array_equal(rollout(Perturbations(start_pose=1), seed=7)[1], a[1])


def test_levels_are_parsed_strictly_and_the_camera_needs_the_builtin_scene():
    assert from_mapping(EnvConfig, {"perturb": {"camera": 2}}, "env").perturb == Perturbations(camera=2)
    with pytest.raises(ValueError, match="env.perturb.camera: a level 0..3"):
        from_mapping(EnvConfig, {"perturb": {"camera": 4}}, "env")
    with pytest.raises(ValueError, match="unknown keys \\['fog'\\]"):
        from_mapping(EnvConfig, {"perturb": {"fog": 1}}, "env")

    class FixedCamera:  # a backend without set_static_view, as calvin_env
        def __init__(self) -> None:
            self.inner = BuiltinEnv(cameras=())
            self.description = self.inner.description

        def close(self) -> None:
            self.inner.close()

    fixed = FixedCamera()
    with pytest.raises(ValueError, match="env.perturb.camera: the builtin backend does not support this axis"):
        PerturbedEnv(fixed, Perturbations(camera=1))
    assert fixed.inner.cid is None  # a refused axis leaves no env open


def test_blur_keeps_a_flat_image_and_smooths_an_edge():
    flat = np.full((9, 9, 3), 77, np.uint8)
    np.testing.assert_array_equal(gaussian_blur(flat, 1.5), flat)
    edge = np.zeros((9, 9, 3), np.uint8)
    edge[:, 5:] = 255
    row = gaussian_blur(edge, 1.0)[4, :, 0]
    assert row[0] == 0 and row[-1] == 255 and 0 < row[4] < row[5] < 255


def test_heldout_paraphrases_are_new_wording_for_every_task():
    table = heldout_instructions()
    assert set(table) == set(TASK_NAMES)
    norm = lambda s: " ".join(s.lower().split())  # noqa: E731
    seen = {norm(eval_instruction(t)) for t in TASK_NAMES} | {norm(p) for t in TASK_NAMES for p in training_instructions(t)}
    for task, phrasings in table.items():
        assert phrasings and not {norm(p) for p in phrasings} & seen, task


def test_language_levels():
    rng = lambda: np.random.default_rng(5)  # noqa: E731
    assert perturbed_instruction("open_drawer", 0, rng()) == eval_instruction("open_drawer")
    paraphrase = perturbed_instruction("open_drawer", 1, rng())
    assert paraphrase in heldout_instructions()["open_drawer"]
    reordered = perturbed_instruction("open_drawer", 2, rng())
    assert sorted(reordered.split()) == sorted(paraphrase.split()) and reordered != paraphrase
    typo = perturbed_instruction("open_drawer", 3, rng())
    assert typo != reordered and len(typo.split()) == len(reordered.split())
    assert reorder_words("one", rng()) == "one" and add_typos("a b", rng()) == "a b"


def test_every_env_axis_is_a_field():
    assert set(ENV_AXES) < set(Perturbations().levels()) == set(AXES)


def test_a_restored_state_is_exact_outside_a_chain_start(plain):
    """Videos restore recorded states on a perturbed env without new_chain: the start pose stays as recorded."""
    env = EnvConfig(perturb=Perturbations(start_pose=3)).build(cameras=())
    try:
        robot_obs, scene_obs = initial_state(benchmark_chains(1)[0][0], "D")
        obs = env.reset(robot_obs=robot_obs, scene_obs=scene_obs)
        np.testing.assert_array_equal(np.concatenate([obs["robot_obs"], obs["scene_obs"]]), plain[1])
    finally:
        env.close()


def test_block_friction_and_mass_change_how_a_grasped_block_moves():
    """The expert lifts a block on the plain env; its actions replayed with lighter friction or heavier blocks
    move the block otherwise (the arm's own motion is commanded, the block's is physics)."""
    from agents.scripted import ScriptedExpert

    condition, tasks = benchmark_chains(30)[29]
    assert tasks[0] == "lift_red_block_table"
    robot_obs, scene_obs = initial_state(condition, "D")

    def blocks(perturb: Perturbations, actions: list[np.ndarray] | None) -> tuple[np.ndarray, list[np.ndarray]]:
        env = EnvConfig(perturb=perturb).build(cameras=())
        try:
            obs = env.reset(robot_obs=robot_obs, scene_obs=scene_obs)
            expert, taken, states = ScriptedExpert(), [], []
            expert.bind_env(env.description)
            for t in range(70):
                action = actions[t] if actions is not None else expert.step(obs, eval_instruction(tasks[0]))
                obs = env.step(action)[0]
                taken.append(np.asarray(action))
                states.append(obs["scene_obs"][6:])  # the blocks' poses
            return np.array(states), taken
        finally:
            env.close()

    plain, actions = blocks(Perturbations(), None)
    assert plain[-1, 2] > plain[0, 2] + 0.02  # the plain run lifted the red block
    for perturb in (Perturbations(friction=3), Perturbations(mass=3)):
        assert not np.allclose(blocks(perturb, actions)[0], plain, atol=1e-4), perturb


APPEARANCE = ("light", "color", "texture")


@pytest.mark.parametrize("axis", APPEARANCE)
def test_appearance_axes_change_the_images_per_chain_seed_and_not_the_physics(plain, axis):
    images, start, states = rollout(Perturbations(**{axis: 2}))
    assert np.abs(images.astype(int) - plain[0]).mean() > 1.0
    np.testing.assert_array_equal(start, plain[1])
    np.testing.assert_array_equal(states, plain[2])
    np.testing.assert_array_equal(rollout(Perturbations(**{axis: 2}))[0], images)  # the chain's seed decides
    assert not np.array_equal(rollout(Perturbations(**{axis: 2}), seed=4)[0], images)


def test_the_cached_static_layer_keeps_the_appearance():
    """Colours and textures also where the static layer restores its shapes from: the layered picture is
    the one a full draw with the same light gives."""
    from harness.sim.cameras import CameraRig

    env = EnvConfig(perturb=Perturbations(light=3, color=3, texture=3)).build(cameras=("static", "gripper"))
    try:
        env.new_chain(5)
        full_rig = CameraRig(env.cid, ("static",), None, "tiny")
        full_rig.set_light(env.cameras._light)
        robot_obs, scene_obs = initial_state(benchmark_chains(1)[0][0], "D")
        env.reset(robot_obs=robot_obs, scene_obs=scene_obs)
        for action in ACTIONS[:3]:
            obs = env.step(action)[0]  # draws the static (layered) and the gripper camera
            full, _ = full_rig.render(*env.robot.tcp_pose())
            assert (obs["rgb_obs"]["rgb_static"] != full["rgb_static"]).any(-1).sum() <= 8
    finally:
        env.close()


def test_a_perturbed_env_not_set_up_has_no_attributes_rather_than_a_key_error():
    """copy, pickle and hasattr look attributes up before __init__ ran: they expect AttributeError (it raised
    KeyError 'env')."""
    from harness.envs.perturbations import PerturbedEnv

    assert not hasattr(PerturbedEnv.__new__(PerturbedEnv), "get_state_obs")
