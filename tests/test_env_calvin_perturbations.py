"""The perturbation axes on env=calvin (the real calvin_env, harness/envs/calvin.py): the camera, the blocks'
and the furniture's dynamics through PyBullet on calvin_env's own client; the scene axes are an error there."""

from __future__ import annotations

from contextlib import closing
import numpy as np
import pybullet as p
import pytest

from harness.envs.perturbations import AXES, Perturbations
from harness.eval.specs import EnvConfig
from harness.sim.cameras import STATIC_EYE, STATIC_TARGET, STATIC_UP
from harness.sim.layout import NEUTRAL_ROBOT_OBS
from harness.tasks import benchmark_chains, initial_state
from tests.test_envs_perturbations import ACTIONS
from tests.test_envs_scene_axes import expert_run

pytestmark = pytest.mark.calvin_env
CALVIN = {"backend": "calvin"}


def calvin_rollout(perturb: Perturbations, actions: np.ndarray, chain: int = 0, cameras: tuple[str, ...] = ("static",)
                   ) -> tuple[np.ndarray | None, np.ndarray]:
    """The static image after the chain's reset, and the states under `actions`, on calvin_env."""
    env = EnvConfig(**CALVIN, perturb=perturb).build(cameras=cameras)
    try:
        if hasattr(env, "new_chain"):
            env.new_chain(3)
        obs = env.reset(*initial_state(benchmark_chains(chain + 1)[chain][0], "D"))
        image = obs["rgb_obs"].get("rgb_static")
        states = [np.concatenate([o["robot_obs"], o["scene_obs"]]) for o in (env.step(a)[0] for a in actions)]
        return image, np.array(states)
    finally:
        env.close()


def test_calvin_static_camera_is_the_one_the_camera_axis_jitters():
    env = EnvConfig(**CALVIN).build(cameras=("static",))
    try:
        (camera,) = env._env.cameras
        np.testing.assert_allclose(camera.look_from, STATIC_EYE, atol=1e-6)
        np.testing.assert_allclose(camera.look_at, STATIC_TARGET, atol=1e-6)
        np.testing.assert_allclose(camera.up_vector, STATIC_UP, atol=1e-6)
    finally:
        env.close()


def test_camera_axis_moves_calvins_static_camera_not_the_physics():
    plain = calvin_rollout(Perturbations(), ACTIONS)
    moved = calvin_rollout(Perturbations(camera=2), ACTIONS)
    assert not np.array_equal(plain[0], moved[0])
    np.testing.assert_array_equal(plain[1], moved[1])


def test_block_and_furniture_dynamics_on_calvin():
    """The dynamics as set on calvin_env's bodies, and the drawer moved otherwise by the same actions."""
    def dynamics(perturb: Perturbations) -> tuple[list, list]:  # one calvin_env at a time (harness.envs.calvin)
        with closing(EnvConfig(**CALVIN, perturb=perturb).build(cameras=())) as env:
            cid, scene = env._env.cid, env._env.scene
            blocks = [p.getDynamicsInfo(b.uid, -1, physicsClientId=cid)[:2] for b in scene.movable_objects]
            doors = [p.getDynamicsInfo(d.uid, d.joint_index, physicsClientId=cid)[0] for d in scene.doors]
        return blocks, doors

    (blocks, doors), (base_blocks, base_doors) = dynamics(Perturbations(friction=1, mass=2, furniture_mass=1)), dynamics(Perturbations())
    for (mass, friction), (base_mass, base_friction) in zip(blocks, base_blocks):
        assert mass == pytest.approx(base_mass * AXES["mass"].value(2))
        assert friction == pytest.approx(base_friction * AXES["friction"].value(1))
    for heavy, base in zip(doors, base_doors):
        assert heavy == pytest.approx(2 * base)
    chain = next(i for i, (_, tasks) in enumerate(benchmark_chains(100)) if tasks[0] == "open_drawer")
    _, actions, _, _ = expert_run(Perturbations(), chain, 60)  # the built-in expert's actions open the drawer
    plain_drawer, stiff_drawer = (calvin_rollout(Perturbations(**kw), actions, chain, cameras=())[1][:, 15 + 1]
                                  for kw in ({}, {"furniture_friction": 3}))
    assert plain_drawer[-1] > 0.05 and not np.allclose(plain_drawer, stiff_drawer, atol=1e-4)


def test_dynamics_scale_from_the_bodies_as_built():
    """A second call scales calvin_env's bodies as built again, as the built-in scene's setters do (it multiplied
    what the first call had set: 4x for two calls of 2x, and 1x never restored them)."""
    with closing(EnvConfig(**CALVIN).build(cameras=())) as env:
        cid, scene = env._env.cid, env._env.scene

        def masses() -> list[float]:
            return [p.getDynamicsInfo(b.uid, -1, physicsClientId=cid)[0] for b in scene.movable_objects] + \
                [p.getDynamicsInfo(d.uid, d.joint_index, physicsClientId=cid)[0] for d in scene.doors]

        base = masses()
        for _ in range(2):
            env.scale_block_dynamics(mass=2.0)
            env.set_furniture_dynamics(mass=2.0)
        assert masses() == pytest.approx([2 * m for m in base])
        env.scale_block_dynamics()
        env.set_furniture_dynamics()
        assert masses() == pytest.approx(base)


def test_block_colors_on_calvin_is_an_error_naming_axis_and_backend():
    with pytest.raises(ValueError, match="env.perturb.block_colors: the calvin backend does not support this axis"):
        EnvConfig(**CALVIN, perturb=Perturbations(block_colors=1)).build()


def test_distractors_stand_in_calvin_as_in_the_builtin_scene():
    """The same draw puts the same bodies at the same places in calvin_env's client; its camera draws them and
    the state it starts from is the plain one."""
    plain_image, plain_states = calvin_rollout(Perturbations(), ACTIONS[:1])
    image, states = calvin_rollout(Perturbations(distractors=2), ACTIONS[:1])
    assert not np.array_equal(image, plain_image)
    np.testing.assert_allclose(states, plain_states, atol=1e-4)
    poses = {}
    for backend in ("builtin", "calvin"):
        env = EnvConfig(backend=backend, perturb=Perturbations(distractors=2)).build(cameras=())
        try:
            env.new_chain(3)
            env.reset(*initial_state(benchmark_chains(1)[0][0], "D"))
            bodies = env.env.scene.distractors if backend == "builtin" else env.env._distractors
            poses[backend] = [p.getBasePositionAndOrientation(uid, physicsClientId=bodies.cid)[0] for uid in bodies.uids]
        finally:
            env.close()
    assert len(poses["calvin"]) == 2
    np.testing.assert_allclose(poses["calvin"], poses["builtin"], atol=1e-3)


def test_start_state_axes_act_on_calvin_as_on_the_builtin_scene():
    """start_pose and block_position change the start state a chain asks for, on any backend: the same draw
    moves calvin_env's arm joints and table blocks as it moves the built-in scene's."""
    perturb = Perturbations(start_pose=1, block_position=2)
    starts = {}
    for backend in ("builtin", "calvin"):
        env = EnvConfig(backend=backend, perturb=perturb).build(cameras=())
        try:
            env.new_chain(9)
            obs = env.reset(*initial_state(benchmark_chains(1)[0][0], "D"))
            starts[backend] = np.concatenate([obs["robot_obs"][7:14], obs["scene_obs"][6:]])
        finally:
            env.close()
    plain = np.concatenate([NEUTRAL_ROBOT_OBS[7:14], initial_state(benchmark_chains(1)[0][0], "D")[1][6:]])
    assert not np.allclose(starts["calvin"], plain, atol=1e-3)
    # to the blocks' settling in the reset's physics step (calvin_env's tilt them by ~3 mrad)
    np.testing.assert_allclose(starts["calvin"], starts["builtin"], atol=5e-3)
