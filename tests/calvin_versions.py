"""What differs between calvin_env commits (docs/EVALUATION.md): run as a script in a process whose
`calvin_env` is the version to probe (PYTHONPATH=CLONE puts a checked-out clone first); prints JSON.

  presses_to_turn_off_led  how many presses of the button (the scripted expert pressing until the LED
                           is off) it takes after a reset with the LED on: 1 at 797142c, 2 at 1431a46
  raw_step_scales_in_place calvin_env's own step() scaled the caller's action array in place (1431a46)
  adapter_keeps_action     the adapter's step() leaves the caller's array alone (every version)
"""

from __future__ import annotations

import json
import sys

import numpy as np

from agents import make_agent
from harness.envs import make_env
from harness.sim.layout import BUTTON_PRESSED_THRESHOLD
from harness.tasks import eval_instruction, initial_state

LED_ON = {"led": 1, "lightbulb": 0, "slider": "right", "drawer": "closed", "red_block": "table",
          "blue_block": "table", "pink_block": "slider_left", "grasped": 0}
BUTTON, LED = 2, 5  # scene_obs indices


def presses_to_turn_off_led(env, max_steps: int = 360) -> int:
    """Let the expert press the button until the LED goes off; count the presses (button travel past
    the threshold, from released) it took."""
    expert = make_agent("scripted")
    expert.bind_env(env.description)
    obs = env.reset(*initial_state(LED_ON, "D"))
    expert.new_chain(0)
    presses, pressed = 0, False
    for _ in range(max_steps):
        obs = env.step(expert.step(obs, eval_instruction("turn_off_led")))[0]
        now = bool(obs["scene_obs"][BUTTON] > BUTTON_PRESSED_THRESHOLD)
        presses += now and not pressed
        pressed = now
        if obs["scene_obs"][LED] == 0:
            return presses
    raise AssertionError(f"the LED was still on after {max_steps} steps and {presses} presses")


def probe(backend: str, **kwargs) -> dict:
    env = make_env(backend, scene="D", cameras=(), **kwargs)
    try:
        result = {"version": env.description.version, "presses_to_turn_off_led": presses_to_turn_off_led(env)}
        action = np.array([0.5, 0, 0, 0, 0, 0, 1.0])
        env.step(action)
        result["adapter_keeps_action"] = bool(action[0] == 0.5)
        if backend == "calvin":
            raw = action.copy()
            env._env.step(raw)  # calvin_env's own step, without the adapter
            result["raw_step_scales_in_place"] = bool(raw[0] != 0.5)
        return result
    finally:
        env.close()


if __name__ == "__main__":
    print(json.dumps(probe(sys.argv[1], **json.loads(sys.argv[2]) if len(sys.argv) > 2 else {})))
