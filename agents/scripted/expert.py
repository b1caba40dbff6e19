"""The scripted expert: solves each of CALVIN's 34 tasks from the state vectors of the observation.

It reads the task from the instruction (CALVIN's evaluation instruction or one of the project's training
phrasings), then runs that task's skill (`skills.py`): waypoints over the scene's measured geometry,
followed by bounded relative actions (`control.py`). It needs no camera. It plans from `robot_obs` and
`scene_obs` only, so it runs on any backend with CALVIN's contract, the real calvin_env included.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np

from agents.base import AgentSpec
from agents.scripted.control import TargetController, Waypoint
from agents.scripted.skills import task_skill
from agents.scripted.world import World
from harness.envs.base import EnvDescription
from harness.tasks import task_for_instruction

MAX_WAYPOINTS_PER_STEP = 8  # reached waypoints are skipped within one step, up to this many


class ScriptedExpert:
    """Privileged, camera-free, deterministic. It plans in the scene of the env it is bound to: the
    evaluation and the recorder call `bind_env(env.description)`, so the layout is always the env's own."""

    def __init__(self) -> None:
        self.spec = AgentSpec(name="scripted", action_type="relative", cameras=(), privileged=True)
        self.world: World | None = None
        self.controller = TargetController()
        self._task: str | None = None
        self._skill: Iterator[Waypoint] | None = None
        self._waypoint: Waypoint | None = None

    def bind_env(self, description: EnvDescription) -> None:
        """Plan in the layout of the env's scene from now on."""
        layout = description.layout()  # the scene's, with the blocks' sizes of a block colour perturbation
        if self.world is not None and self.world.layout == layout:
            return
        self.world = World(layout)
        self.spec = AgentSpec(name="scripted", action_type="relative", cameras=(), privileged=True,
                              extra={"scene": layout.name})

    def new_chain(self, seed: int) -> None:
        """A new episode in a reset env: nothing of the previous one may carry over (the controller's
        gripper-settling clock did, so a chain's result depended on what the worker ran before it)."""
        self.controller = TargetController()
        self.reset()

    def reset(self) -> None:
        # within a chain the controller keeps its gripper clock (the gripper may still be moving from the previous
        # subtask's last command) and its estimate of the env's target (where the previous subtask left it)
        self.controller.reset()
        self._task = None
        self._skill = None
        self._waypoint = None

    def step(self, obs: dict[str, Any], instruction: str) -> np.ndarray:
        if self.world is None:
            raise ValueError("the scripted expert knows no scene yet: call bind_env(env.description) first "
                             "(the evaluation and the recorder do)")
        task = task_for_instruction(instruction)
        self.world.update(obs)
        self.controller.sync(self.world.robot_obs)
        if task != self._task:
            self._task, self._skill, self._waypoint = task, task_skill(self.world, task), None
        for _ in range(MAX_WAYPOINTS_PER_STEP):
            if self._waypoint is None:
                self._waypoint = next(self._skill, None) if self._skill is not None else None
                if self._waypoint is None:
                    self._skill = None
                    return self.controller.hold()
            if not self.controller.reached(self._waypoint, self.world.robot_obs):
                return self.controller.action(self._waypoint, self.world.robot_obs)
            self._waypoint = None
        return self.controller.hold()

    def planned_tcp_path(self) -> np.ndarray | None:
        """The waypoint the expert is heading for, as a one-point path."""
        return None if self._waypoint is None else self._waypoint.pos[None, :].copy()
