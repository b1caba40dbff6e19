"""The scene axes (distractors, block colours, block positions) and the furniture's dynamics axes
(harness/envs/perturbations.py, harness/envs/scene_axes.py): each changes what it claims and nothing else."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pybullet as p
import pytest

from harness.envs.builtin import BuiltinEnv
from harness.envs.perturbations import AXES, Perturbations, PerturbedEnv
from harness.envs.scene_axes import footprint_radius, on_table
from harness.eval.specs import EnvConfig
from harness.sim.distractors import DISTRACTORS, TABLE_FRONT_Y, free_x_ranges, place_distractors
from harness.sim.layout import BLOCK_RGBA, get_layout
from harness.tasks import TaskOracle, benchmark_chains, eval_instruction, initial_state
from tests.test_envs_perturbations import rollout

SCENE_LOOKS = ("distractors", "block_colors")  # change the picture, not the state (nothing touches them here)
FURNITURE = ("furniture_friction", "furniture_mass", "furniture_damping")


@pytest.fixture(scope="module")
def plain():
    return rollout(Perturbations())


@pytest.mark.parametrize("axis", SCENE_LOOKS)
def test_scene_axes_change_the_picture_not_the_state(plain, axis):
    """Bodies the actions never touch: the state starts and moves the same to the solver's precision (another
    body, or a block of another size, on the table changes how PyBullet's solver settles the resting blocks)."""
    images, start, states = rollout(Perturbations(**{axis: 3}))
    assert not np.array_equal(images, plain[0])
    np.testing.assert_allclose(start, plain[1], atol=1e-4)
    np.testing.assert_allclose(states, plain[2], atol=1e-4)


def test_distractors_stand_clear_of_blocks_and_tasks_and_follow_the_chain_seed():
    env = EnvConfig(perturb=Perturbations(distractors=3)).build(cameras=())
    try:
        robot_obs, scene_obs = initial_state(benchmark_chains(1)[0][0], "D")
        env.new_chain(5)
        env.reset(robot_obs=robot_obs, scene_obs=scene_obs)
        scene, cid = env.env.scene, env.env.cid
        assert len(scene.distractors.uids) == AXES["distractors"].value(3) == len(DISTRACTORS)
        (lo, hi), = free_x_ranges(get_layout("D"))
        for uid, kind in zip(scene.distractors.uids, DISTRACTORS):
            (x, y, z), _ = p.getBasePositionAndOrientation(uid, physicsClientId=cid)
            assert lo + kind.radius <= x <= hi - kind.radius and TABLE_FRONT_Y[0] < y < TABLE_FRONT_Y[1]
            assert z == pytest.approx(kind.rest_z, abs=2e-3)  # standing on the table top
            for other in [*scene.block_uids.values(), env.env.robot.uid]:
                assert not p.getClosestPoints(uid, other, 0.01, physicsClientId=cid)
            touching = p.getContactPoints(uid, scene.table, physicsClientId=cid)
            assert all(c[8] > -2e-3 for c in touching)  # resting on the table, not sunk into it
        first = scene.distractors.poses.copy()
        env.new_chain(5)
        np.testing.assert_array_equal(scene.distractors.poses, first)
        env.new_chain(6)
        assert not np.array_equal(scene.distractors.poses, first)
    finally:
        env.close()


def test_distractors_that_do_not_fit_name_the_scene():
    crowded = replace(get_layout("D"), sample_table=((-0.44, 0.44), (-0.15, -0.03)))
    assert free_x_ranges(crowded) == []
    with pytest.raises(ValueError, match="scene D's table"):
        place_distractors(replace(crowded, sample_table=((-0.2, 0.44), (-0.15, -0.03))), 4, np.random.default_rng(0))


def test_a_scene_without_room_for_the_distractors_is_an_error_that_leaves_no_env_open():
    env = BuiltinEnv(scene="A", cameras=())
    with pytest.raises(ValueError, match="scene A's table"):
        PerturbedEnv(env, Perturbations(distractors=3))
    assert env.cid is None


def test_block_position_moves_table_blocks_off_their_slots_only(plain):
    layout = get_layout("D")
    for level in (1, 3):
        _, start, _ = rollout(Perturbations(block_position=level))
        distance = AXES["block_position"].value(level) / 100
        np.testing.assert_array_equal(start[:21], plain[1][:21])  # the robot and the furniture
        moved = 0
        for color in layout.block_order:
            sl = layout.block_obs_slice(color)
            before, after = plain[1][15:][sl], start[15:][sl]
            if on_table(plain[1][15:], layout, color):
                assert np.hypot(*(after[:2] - before[:2])) == pytest.approx(distance, abs=1e-3)
                (x0, x1), (y0, y1) = layout.sample_table
                assert x0 <= after[0] <= x1 and y0 <= after[1] <= y1
                moved += 1
            else:
                np.testing.assert_allclose(after, before, atol=1e-3)
        assert moved == 1
    a, b = rollout(Perturbations(block_position=2), seed=4)[1], rollout(Perturbations(block_position=2), seed=5)[1]
    np.testing.assert_array_equal(a, rollout(Perturbations(block_position=2), seed=4)[1])
    assert not np.array_equal(a, b)


def test_moved_blocks_keep_clear_of_each_other():
    layout = get_layout("D")
    _, scene_obs = initial_state(benchmark_chains(1)[0][0], "D")
    from harness.envs.scene_axes import shift_table_blocks

    for seed in range(20):
        shifted = shift_table_blocks(scene_obs, layout, 0.08, np.random.default_rng(seed))
        xy = {c: shifted[layout.block_obs_slice(c)][:2] for c in layout.block_order}
        for i, a in enumerate(layout.block_order):
            for b in layout.block_order[i + 1:]:
                assert np.hypot(*(xy[a] - xy[b])) > footprint_radius(layout, a) + footprint_radius(layout, b)


def expert_run(perturb: Perturbations, chain: int, steps: int, actions: list[np.ndarray] | None = None
               ) -> tuple[np.ndarray, list[np.ndarray], bool, PerturbedEnv | BuiltinEnv]:
    """The scripted expert (or `actions` replayed) on the first subtask of benchmark chain `chain`: the
    scene_obs trajectory, the actions, whether the oracle judged the subtask done."""
    from agents.scripted import ScriptedExpert

    condition, tasks = benchmark_chains(chain + 1)[chain]
    env = EnvConfig(perturb=perturb).build(cameras=())
    try:
        if hasattr(env, "new_chain"):
            env.new_chain(0)
        obs = env.reset(*initial_state(condition, "D"))
        expert, taken, states, done = ScriptedExpert(), [], [], False
        expert.bind_env(env.description)
        start = env.get_info()
        for t in range(steps):
            action = actions[t] if actions is not None else expert.step(obs, eval_instruction(tasks[0]))
            obs, _, _, info = env.step(action)
            taken.append(np.asarray(action))
            states.append(obs["scene_obs"].copy())
            done = done or TaskOracle().is_completed(tasks[0], start, info)
        return np.array(states), taken, done, env
    finally:
        env.close()


@pytest.mark.parametrize("level", (1, 3))
def test_swapped_colours_the_expert_lifts_the_block_that_looks_red(level):
    """Chain 29 starts with lift_red_block_table. Under the swap the red block is another body (another size):
    the expert, planning from state with the sizes the env's description names, still lifts it, and the body
    the oracle calls red is the one drawn red."""
    condition, tasks = benchmark_chains(30)[29]
    assert tasks[0] == "lift_red_block_table"
    states, _, done, env = expert_run(Perturbations(block_colors=level), 29, 120)
    assert done
    sizes = env.description.block_sizes
    assert sizes["red"] != get_layout("D").block_sizes["red"]
    env = EnvConfig(perturb=Perturbations(block_colors=level)).build(cameras=())
    try:
        red = env.get_info()["scene_info"]["movable_objects"]["block_red"]["uid"]
        assert tuple(p.getVisualShapeData(red, physicsClientId=env.env.cid)[0][7]) == BLOCK_RGBA["red"]
        half_x = p.getCollisionShapeData(red, -1, physicsClientId=env.env.cid)[0][3][0] / 2
        assert half_x * 2 == pytest.approx({"small": 0.04, "middle": 0.056, "big": 0.08}[sizes["red"]])
    finally:
        env.close()


@pytest.mark.parametrize("axis", FURNITURE)
def test_furniture_axes_change_how_the_drawer_moves_not_the_picture(axis):
    """The expert opens the drawer on the plain env; the same actions on heavier, stiffer or damped furniture
    move the drawer otherwise, and the first picture is the plain one."""
    chain = next(i for i, (_, tasks) in enumerate(benchmark_chains(100)) if tasks[0] == "open_drawer")
    plain_states, actions, done, _ = expert_run(Perturbations(), chain, 60)
    assert done and plain_states[-1, 1] > 0.12
    states, _, _, _ = expert_run(Perturbations(**{axis: 3}), chain, 60, actions)
    assert not np.allclose(states[:, 1], plain_states[:, 1], atol=1e-4)
    images = [rollout(Perturbations(**kw))[0] for kw in ({}, {axis: 3})]
    np.testing.assert_array_equal(images[0], images[1])


def test_scene_and_furniture_axes_need_the_builtin_scene():
    class StateOnly:  # a backend without the built-in scene's bodies, as calvin_env
        def __init__(self) -> None:
            self.inner = BuiltinEnv(cameras=())
            self.description = replace(self.inner.description, backend="calvin")

        def close(self) -> None:
            self.inner.close()

    for axis in ("distractors", "block_colors", *FURNITURE):
        with pytest.raises(ValueError, match=f"env.perturb.{axis}: the calvin backend does not support"):
            PerturbedEnv(StateOnly(), Perturbations(**{axis: 1}))


def test_unperturbed_description_names_no_block_sizes():
    env = EnvConfig().build(cameras=())
    try:
        assert "block_sizes" not in env.description.to_dict()
        assert env.description.layout() is get_layout("D")
    finally:
        env.close()


@pytest.mark.parametrize("axis", SCENE_LOOKS)
def test_a_reused_env_draws_a_chain_start_as_a_new_env_does(axis):
    """The recorder and the evaluation reuse an env across chains: after a chain with the furniture elsewhere,
    the static camera's cached layer is drawn anew with the furniture's own colours and textures."""
    conditions = [benchmark_chains(3)[i][0] for i in (0, 2)]

    def start(env, seed: int, condition) -> np.ndarray:
        env.new_chain(seed)
        return env.reset(*initial_state(condition, "D"))["rgb_obs"]["rgb_static"]

    reused, new = (EnvConfig(perturb=Perturbations(**{axis: 1})).build(cameras=("static",)) for _ in range(2))
    try:
        start(reused, 5, conditions[0])
        np.testing.assert_array_equal(start(reused, 6, conditions[1]), start(new, 6, conditions[1]))
    finally:
        reused.close()
        new.close()


def test_the_suite_refuses_a_row_its_scene_cannot_run_before_running_any(tmp_path):
    from harness.eval.config import EvalSettings
    from harness.eval.robust import SuiteSettings, run_suite
    from harness.eval.specs import AgentConfig

    settings = EvalSettings(num_chains=1, ep_len=5, workers=0, videos=0, video_failures=0, progress=False)
    with pytest.raises(ValueError, match="scene A's table"):
        run_suite(settings, EnvConfig(scene="A"), AgentConfig("scripted"), SuiteSettings(axes=("distractors",)), tmp_path)
    assert not any(tmp_path.iterdir())


def test_axis_streams_do_not_depend_on_the_order_of_later_axes():
    """The axes measured first keep their streams (their place when they were measured); later ones are named
    by their name, so axes added on two branches draw the same whichever is listed first."""
    from harness.envs.perturbations import PLACE_NAMED_STREAMS, axis_rng

    for axis, place in (("camera", 2), ("light", 9), ("texture", 11)):
        legacy = np.random.default_rng(np.random.SeedSequence([7, place])).random()
        assert PLACE_NAMED_STREAMS.index(axis) == place and axis_rng(7, axis).random() == legacy
    draws = {axis: axis_rng(7, axis).random() for axis in AXES}
    assert len(set(draws.values())) == len(AXES)


def test_videos_show_the_distractors_and_colours_the_policy_saw():
    """A video's rendering env keeps the scene's looks (drawn from the chain's seed) and not the block positions,
    which are in the recorded states already: its frames are the policy's images, the distractors where the
    chain started them (their settling by a fraction of a pixel since is not in the recorded states)."""
    from harness.eval.video import VideoRenderer, _frames
    from tests.test_eval_robust import RawFrames, perturbed_chain

    looks = Perturbations(distractors=2, block_colors=1)
    seen, meta, trace = perturbed_chain(replace(looks, block_position=2), seed=7, steps=3)
    renderer = VideoRenderer(EnvConfig(perturb=replace(looks, block_position=2)))
    assert renderer.env_cfg.perturb == looks
    frames = RawFrames()
    list(_frames(renderer.chain_env(meta), frames, meta, [trace], ep_len=360, stride=1))
    renderer.close()
    assert len(frames.images) == len(seen)
    np.testing.assert_array_equal(frames.images[0], seen[0])
    for frame, image in zip(frames.images[1:], seen[1:]):
        differ = frame != image
        assert differ.mean() < 1e-3 and np.abs(frame.astype(int) - image).max() <= 2
