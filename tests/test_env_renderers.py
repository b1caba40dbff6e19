"""The built-in scene drawn by TinyRenderer and by EGL (PyBullet's eglRenderer plugin; Mesa's software EGL on
machines without a GPU): the same cameras, the same physics, other pixels. Skipped, with the reason, where EGL
cannot start; VLA_HARNESS_REQUIRE_EGL=1 (set by .ci/run) makes that a failure."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from harness.envs.builtin import BuiltinEnv
from harness.eval.specs import EnvConfig
from harness.sim import cameras
from harness.tasks import benchmark_chains, initial_state

ACTIONS = np.array([[0.6, -0.3, -0.4, 0.0, 0.0, 0.2, 1.0]] * 4 + [[0.0, 0.5, 0.0, 0.1, 0.0, 0.0, -1.0]] * 4)


@pytest.fixture(scope="module")
def egl() -> None:
    problem = cameras.egl_problem()
    if problem is not None:
        if os.environ.get("VLA_HARNESS_REQUIRE_EGL") == "1":
            pytest.fail(f"VLA_HARNESS_REQUIRE_EGL=1 but {problem}")
        pytest.skip(problem)


def run(renderer: str) -> tuple[list[dict], list[np.ndarray], BuiltinEnv]:
    """Observations at chain 0's start and after each of ACTIONS."""
    env = BuiltinEnv(renderer=renderer)
    robot_obs, scene_obs = initial_state(benchmark_chains(1)[0][0], "D")
    observations = [env.reset(robot_obs=robot_obs, scene_obs=scene_obs)]
    observations += [env.step(a)[0] for a in ACTIONS]
    return observations, [np.r_[o["robot_obs"], o["scene_obs"]] for o in observations], env


@pytest.fixture(scope="module")
def both(egl):
    tiny, egl_run = run("tiny"), run("egl")
    yield tiny, egl_run
    tiny[2].close()
    egl_run[2].close()


def test_egl_draws_the_same_cameras_with_other_pixels(both):
    (tiny_obs, _, tiny_env), (egl_obs, _, egl_env) = both
    assert (tiny_env.description.renderer, egl_env.description.renderer) == ("tiny", "egl")
    # the same intrinsics and poses: both renderers get the same matrices
    assert tiny_env.cameras.specs == egl_env.cameras.specs
    assert tiny_env.cameras._projections == egl_env.cameras._projections
    assert tiny_env.cameras._static_view == egl_env.cameras._static_view
    for a, b in zip(tiny_obs, egl_obs):
        for name in ("rgb_static", "rgb_gripper"):
            assert a["rgb_obs"][name].shape == b["rgb_obs"][name].shape and b["rgb_obs"][name].dtype == np.uint8
            assert np.abs(a["rgb_obs"][name].astype(int) - b["rgb_obs"][name]).mean() > 5  # other lighting, shadows
        # the same geometry: the depths agree up to EGL's 16-bit depth buffer (~2.4 cm steps at 4 m)
        for name, tolerance in (("depth_static", 0.015), ("depth_gripper", 0.005)):
            assert a["depth_obs"][name].dtype == b["depth_obs"][name].dtype == np.float32
            assert np.median(np.abs(a["depth_obs"][name] - b["depth_obs"][name])) < tolerance


def test_egl_leaves_the_physics_alone_and_draws_deterministically(both):
    (_, tiny_states, _), (egl_obs, egl_states, _) = both
    np.testing.assert_array_equal(np.array(tiny_states), np.array(egl_states))
    again, _, env = run("egl")
    env.close()
    for a, b in zip(egl_obs, again):
        for name in ("rgb_static", "rgb_gripper"):
            np.testing.assert_array_equal(a["rgb_obs"][name], b["rgb_obs"][name])


def test_an_egl_that_cannot_start_is_an_error_naming_what_is_missing(monkeypatch, tmp_path):
    from harness.eval import AgentConfig
    from harness.eval.config import EvalSettings
    from harness.eval.robust import SuiteSettings, run_suite

    monkeypatch.setenv("__EGL_VENDOR_LIBRARY_DIRS", "/nonexistent")  # libglvnd finds no EGL driver
    cameras.egl_problem.cache_clear()
    try:
        problem = cameras.egl_problem()
        assert problem is not None and "apt-get install libegl1 libegl-mesa0 libgl1-mesa-dri" in problem
        with pytest.raises(RuntimeError, match="renderer=egl: PyBullet's EGL renderer cannot start here"):
            BuiltinEnv(renderer="egl", cameras=("static",))
        with pytest.raises(ValueError, match="env.renderer=egl: PyBullet's EGL renderer cannot start"):
            EnvConfig(renderer="egl").check()
        BuiltinEnv(renderer="egl", cameras=()).close()  # no camera: nothing to draw, nothing loaded
        with pytest.raises(ValueError, match="the renderer row cannot run .*leave 'renderer' out of suite.axes"):
            run_suite(EvalSettings(num_chains=1), EnvConfig(), AgentConfig("scripted"), SuiteSettings(), tmp_path / "suite")
        assert not (tmp_path / "suite").exists()  # stopped before the first row
    finally:
        cameras.egl_problem.cache_clear()


def test_the_suite_renderer_row_pairs_the_other_renderer_and_measures_the_image_difference(egl, tmp_path):
    from harness.eval import AgentConfig
    from harness.eval.config import EvalSettings
    from harness.eval.robust import SuiteSettings, run_suite

    settings = EvalSettings(num_chains=2, ep_len=40, workers=0, videos=0, video_failures=0, progress=False)
    table = run_suite(settings, EnvConfig(), AgentConfig("scripted"), SuiteSettings(axes=("renderer",), image_chains=1),
                      tmp_path)
    row = table[1]
    assert (row["axis"], row["level"], row["amount"]) == ("renderer", 1, "egl (unperturbed: tiny)")
    assert row["drop"] == 0 and row["paired"] == 2  # the expert renders nothing: the renderer cannot move it
    difference = json.loads((tmp_path / "renderer_1" / "image_difference.json").read_text())
    assert difference["renderers"] == ["tiny", "egl"] and difference["states"] >= 2
    assert set(difference["rgb_mean_abs"]) == {"rgb_static", "rgb_gripper"}
    assert min(difference["rgb_mean_abs"].values()) > 5 and max(difference["depth_median_abs_m"].values()) < 0.015
    assert "renderer tiny vs egl" in (tmp_path / "robustness.md").read_text()
    # measured again when its settings change (it was kept from the first run whatever the rerun asked)
    run_suite(settings, EnvConfig(), AgentConfig("scripted"), SuiteSettings(axes=("renderer",), image_chains=2), tmp_path)
    assert json.loads((tmp_path / "renderer_1" / "image_difference.json").read_text())["chains"] == 2
    # and said only by a suite with the renderer row
    run_suite(settings, EnvConfig(), AgentConfig("scripted"), SuiteSettings(axes=("camera",), levels=(1,)), tmp_path)
    assert "renderer tiny vs egl" not in (tmp_path / "robustness.md").read_text()
