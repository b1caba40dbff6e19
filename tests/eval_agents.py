"""Small agents and envs for the evaluation tests (importable by worker processes as tests.eval_agents)."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import time
from typing import Any

import numpy as np

from agents import AgentSpec
from agents.scripted import ScriptedExpert
from harness.envs import make_env
from harness.sim.layout import NEUTRAL_TCP_EULER, get_layout

BUTTON_Y, BUTTON_TOP_Z = -0.12, 0.46


class ButtonPresser:
    """Privileged, absolute actions: hovers over the LED button, then presses it (turns the LED on or off).

    It completes turn_on_led / turn_off_led and nothing else, so chains starting with those score 1.
    """

    def __init__(self, scene: str = "D", hover_steps: int = 12) -> None:
        self.button_x = get_layout(scene).button_x
        self.hover_steps = hover_steps
        self.spec = AgentSpec(name="button_presser", action_type="absolute", privileged=True)

    def reset(self) -> None:
        self.t = 0

    def step(self, obs: dict[str, Any], instruction: str) -> np.ndarray:
        assert "scene_obs" in obs  # privileged agents see the scene
        self.t += 1
        z = 0.56 if self.t <= self.hover_steps else 0.43
        return np.array([self.button_x, BUTTON_Y, z, *NEUTRAL_TCP_EULER, -1.0])

    def planned_tcp_path(self) -> np.ndarray | None:
        return np.array([[self.button_x, BUTTON_Y, 0.56], [self.button_x, BUTTON_Y, 0.43]])


class Misbehaving:
    """Relative no-op actions, except on the chain whose seed is `bad_seed`, where step does `what`:
    "nan", "shape", "gripper", "raise", "hang" (or "reset_raise": reset raises)."""

    def __init__(self, what: str, bad_seed: int) -> None:
        self.what, self.bad_seed = what, bad_seed
        self.seed = None
        self.spec = AgentSpec(name=f"misbehaving_{what}")

    def new_chain(self, seed: int) -> None:
        self.seed = seed

    def reset(self) -> None:
        if self.what == "reset_raise" and self.seed == self.bad_seed:
            raise RuntimeError("reset failed on purpose")

    def step(self, obs: dict[str, Any], instruction: str) -> Any:
        assert "scene_obs" not in obs  # not privileged: no scene state
        if self.seed == self.bad_seed:
            if self.what == "nan":
                return np.array([np.nan, 0, 0, 0, 0, 0, 1.0])
            if self.what == "shape":
                return np.zeros(6)
            if self.what == "gripper":
                return np.array([0, 0, 0, 0, 0, 0, 0.5])
            if self.what == "raise":
                raise RuntimeError("step failed on purpose")
            if self.what == "hang":
                time.sleep(3600)
        return np.array([0, 0, 0, 0, 0, 0, 1.0])

    def planned_tcp_path(self) -> None:
        return None


class HoldStill:
    """Relative no-op actions with the gripper commanded `gripper` (-1 closed: a block in the hand stays there)."""

    def __init__(self, gripper: float) -> None:
        self.gripper = gripper
        self.spec = AgentSpec(name="hold_still")

    def reset(self) -> None:
        pass

    def step(self, obs: dict[str, Any], instruction: str) -> np.ndarray:
        return np.array([0, 0, 0, 0, 0, 0, self.gripper])


class FalteringExpert(ScriptedExpert):
    """The scripted expert, except on the chains named in `falter` ({chain seed: subtask number, from 1}):
    there, from that subtask on, it returns a NaN action, so that subtask fails at once and ends the chain.
    A run of it differs from the expert's in known chains, by a known number of subtasks."""

    def __init__(self, falter: dict[int, int]) -> None:
        super().__init__()  # the scene's layout comes from the env it is bound to
        self.falter = {int(k): int(v) for k, v in falter.items()}
        self.spec = AgentSpec(name="faltering_expert", action_type="relative", privileged=True)
        self.seed, self.subtask = None, 0

    def new_chain(self, seed: int) -> None:
        super().new_chain(seed)
        self.seed, self.subtask = seed, 0

    def reset(self) -> None:
        super().reset()
        self.subtask += 1

    def step(self, obs: dict[str, Any], instruction: str) -> np.ndarray:
        if self.seed in self.falter and self.subtask >= self.falter[self.seed]:
            return np.array([np.nan, 0, 0, 0, 0, 0, 1.0])
        return super().step(obs, instruction)


class Sleepy(HoldStill):
    """Relative no-op actions, each after `delay_s` seconds (a policy server too slow for its clients)."""

    def __init__(self, delay_s: float) -> None:
        super().__init__(gripper=1.0)
        self.delay_s = delay_s
        self.spec = AgentSpec(name="sleepy")

    def step(self, obs: dict[str, Any], instruction: str) -> np.ndarray:
        time.sleep(self.delay_s)
        return super().step(obs, instruction)


def make_button_presser(scene: str = "D") -> ButtonPresser:
    return ButtonPresser(scene)


class GatedPresser(ButtonPresser):
    """The button presser, holding every chain after the first while the file `gate` exists: an evaluation
    that stays busy for exactly as long as a test needs."""

    def __init__(self, gate: str, scene: str = "D") -> None:
        super().__init__(scene)
        self.gate = gate

    def new_chain(self, seed: int) -> None:
        while seed > 0 and os.path.exists(self.gate):
            time.sleep(0.05)


def make_gated_presser(gate: str, scene: str = "D") -> GatedPresser:
    return GatedPresser(gate, scene)


class FlakyEnv:
    """The built-in env, failing during the chain that starts from `fail_scene_obs`, at its `fail_step`-th step.

    action: "raise" (an exception inside env.step) or "kill" (the process dies with SIGKILL).
    times: how many times it fails in all, counted in the file `marker` across processes (None: always).
    """

    def __init__(self, fail_scene_obs: list[float], action: str = "raise", times: int | None = None,
                 marker: str | None = None, fail_step: int = 3, **kwargs: Any) -> None:
        self.env = make_env("builtin", **kwargs)
        self.description = self.env.description
        self.fail_scene_obs = np.asarray(fail_scene_obs, dtype=np.float64)
        self.action, self.times, self.marker, self.fail_step = action, times, marker, fail_step
        self.steps, self.bad = 0, False

    def reset(self, robot_obs=None, scene_obs=None):
        self.steps = 0
        self.bad = scene_obs is not None and np.array_equal(np.asarray(scene_obs), self.fail_scene_obs)
        return self.env.reset(robot_obs, scene_obs)

    def _should_fail(self) -> bool:
        if not self.bad or self.steps != self.fail_step:
            return False
        if self.times is None:
            return True
        used = len(open(self.marker).read().splitlines()) if os.path.exists(self.marker) else 0
        if used >= self.times:
            return False
        with open(self.marker, "a") as f:
            f.write(f"{os.getpid()}\n")
        return True

    def step(self, action):
        self.steps += 1
        if self._should_fail():
            if self.action == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise RuntimeError("simulated physics blow-up")
        return self.env.step(action)

    def get_obs(self):
        return self.env.get_obs()

    def get_info(self):
        return self.env.get_info()

    def close(self):
        self.env.close()


def env_killing_the_first_render_process(marker: str, **kwargs: Any):
    """The built-in env; but the first rendering env (static camera) built in a child process kills that
    process, as a segfault would. Rollout workers (no cameras) and the parent are spared."""
    if "static" in kwargs.get("cameras", ()) and mp.parent_process() is not None and not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), signal.SIGKILL)
    return make_env("builtin", **kwargs)


class SetupFailingOnce:
    """The built-in env, whose first `without_cameras()` (a single-task setup) raises, once in all processes (counted
    in the file `marker`): what a backend whose state read fails during a setup does."""

    def __init__(self, marker: str, **kwargs: Any) -> None:
        self.env = make_env("builtin", **kwargs)
        self.marker = marker

    def without_cameras(self):
        if not os.path.exists(self.marker):
            open(self.marker, "w").close()
            raise RuntimeError("simulated failure reading the scene during the setup")
        return self.env.without_cameras()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.__dict__["env"], name)


class ServerOutage(HoldStill):
    """An agent whose server is gone at its first `outages` steps (counted in the file `marker` across processes):
    each raises AgentUnavailable, and `wait_until_available` takes `wait_s` seconds, as a restart would."""

    def __init__(self, marker: str, outages: int = 2, wait_s: float = 3.0) -> None:
        super().__init__(gripper=1.0)
        self.marker, self.outages, self.wait_s = marker, outages, wait_s

    def step(self, obs: dict[str, Any], instruction: str) -> np.ndarray:
        seen = len(open(self.marker).read().splitlines()) if os.path.exists(self.marker) else 0
        if seen < self.outages:
            with open(self.marker, "a") as f:
                f.write(f"{os.getpid()}\n")
            from agents.base import AgentUnavailable

            raise AgentUnavailable("the policy server is gone")
        return super().step(obs, instruction)

    def wait_until_available(self) -> None:
        time.sleep(self.wait_s)
