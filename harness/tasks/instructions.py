"""Language instructions: CALVIN's evaluation instruction per task, and this project's training phrasings.

Evaluation instructions are `new_playtable_validation.yaml[task][0]` (docs/CALVIN.md#instructions), copied
character for character, odd capitals and grammar included, because a policy is scored on exactly
these strings. The training phrasings were written for this project; none equals an evaluation
instruction, so a policy trained on our recordings is still tested on unseen wording.
"""

from __future__ import annotations

from functools import lru_cache
from types import MappingProxyType
from typing import Mapping

import numpy as np

from harness.tasks.catalog import COLORS, TASK_NAMES, task_index


def _eval_table() -> dict[str, str]:
    out: dict[str, str] = {}
    for c in COLORS:
        out[f"rotate_{c}_block_right"] = f"take the {c} block and rotate it to the right"
        out[f"rotate_{c}_block_left"] = f"take the {c} block and rotate it to the left"
        out[f"push_{c}_block_right"] = f"go push the {c} block right"
        out[f"push_{c}_block_left"] = f"go push the {c} block left"
        out[f"lift_{c}_block_table"] = f"grasp and lift the {c} block"
        out[f"lift_{c}_block_slider"] = f"lift the {c} block from the sliding cabinet"
        out[f"lift_{c}_block_drawer"] = f"Take the {c} block from the drawer"
    out.update({
        "move_slider_left": "push the sliding door to the left side",
        "move_slider_right": "push the sliding door to the right side",
        "open_drawer": "pull the handle to open the drawer",
        "close_drawer": "push the handle to close the drawer",
        "place_in_slider": "store the grasped block in the sliding cabinet",
        "place_in_drawer": "store the grasped block in the drawer",
        "push_into_drawer": "slide the block that it falls into the drawer",
        "stack_block": "stack the grasped block",
        "unstack_block": "remove the stacked block",
        "turn_on_lightbulb": "use the switch to turn on the light bulb",
        "turn_off_lightbulb": "use the switch to turn off the light bulb",
        "turn_on_led": "press the button to turn on the led light",
        "turn_off_led": "press the button to turn off the led light",
    })
    return {name: out[name] for name in TASK_NAMES}


EVAL_INSTRUCTIONS: Mapping[str, str] = MappingProxyType(_eval_table())

# Training phrasings. "{c}" is the block colour. Right/left rotations are clockwise/counter-clockwise
# seen from above (CALVIN's rotate_*_right needs a relative yaw below -60 deg).
_COLOR_TEMPLATES: dict[str, tuple[str, ...]] = {
    "rotate_{c}_block_right": (
        "turn the {c} block clockwise",
        "rotate the {c} block to the right",
        "twist the {c} block rightwards",
        "grab the {c} block and turn it right",
        "give the {c} block a clockwise quarter turn",
        "spin the {c} block to the right where it lies",
    ),
    "rotate_{c}_block_left": (
        "turn the {c} block counterclockwise",
        "rotate the {c} block to the left",
        "twist the {c} block leftwards",
        "grab the {c} block and turn it left",
        "give the {c} block an anticlockwise quarter turn",
        "spin the {c} block to the left where it lies",
    ),
    "push_{c}_block_right": (
        "push the {c} block to the right",
        "slide the {c} block rightwards",
        "nudge the {c} block over to the right",
        "shove the {c} block right along the table",
        "move the {c} block right by pushing it",
        "push the {c} block towards the right side of the table",
    ),
    "push_{c}_block_left": (
        "push the {c} block to the left",
        "slide the {c} block leftwards",
        "nudge the {c} block over to the left",
        "shove the {c} block left along the table",
        "move the {c} block left by pushing it",
        "push the {c} block towards the left side of the table",
    ),
    "lift_{c}_block_table": (
        "pick up the {c} block",
        "lift the {c} block off the table",
        "grab the {c} block and raise it",
        "pick the {c} block up from the table",
        "take hold of the {c} block and lift it up",
        "raise the {c} block from the table top",
    ),
    "lift_{c}_block_slider": (
        "pick up the {c} block from the cabinet shelf",
        "take the {c} block out of the sliding cabinet",
        "grab the {c} block inside the cabinet and lift it",
        "lift the {c} block off the shelf behind the sliding door",
        "pick the {c} block up out of the cupboard",
        "get the {c} block from the cabinet",
    ),
    "lift_{c}_block_drawer": (
        "take the {c} block out of the drawer",
        "pick up the {c} block from the drawer",
        "lift the {c} block out of the open drawer",
        "grab the {c} block lying in the drawer",
        "remove the {c} block from the drawer",
        "get the {c} block from inside the drawer",
    ),
}

_FIXED: dict[str, tuple[str, ...]] = {
    "move_slider_left": (
        "slide the cabinet door to the left",
        "move the sliding door left",
        "push the sliding door leftwards",
        "shift the cabinet's door over to the left",
        "drag the sliding panel to the left",
        "open the right part of the cabinet by sliding the door left",
    ),
    "move_slider_right": (
        "slide the cabinet door to the right",
        "move the sliding door right",
        "push the sliding door rightwards",
        "shift the cabinet's door over to the right",
        "drag the sliding panel to the right",
        "open the left part of the cabinet by sliding the door right",
    ),
    "open_drawer": (
        "open the drawer",
        "pull the drawer open",
        "slide the drawer out",
        "grab the drawer handle and pull",
        "pull out the drawer",
        "get the drawer open",
    ),
    "close_drawer": (
        "close the drawer",
        "push the drawer shut",
        "slide the drawer back in",
        "shut the drawer",
        "push the drawer closed by its handle",
        "push in the drawer",
    ),
    "place_in_slider": (
        "put the block you are holding into the sliding cabinet",
        "place the held block in the cabinet",
        "set the block down inside the cabinet",
        "drop the grasped block onto the cabinet shelf",
        "store the block in the cupboard behind the sliding door",
        "put the block away in the sliding cabinet",
    ),
    "place_in_drawer": (
        "put the block you are holding into the drawer",
        "place the held block in the drawer",
        "drop the block into the open drawer",
        "set the grasped block down in the drawer",
        "put the block away in the drawer",
        "release the block inside the drawer",
    ),
    "push_into_drawer": (
        "push the block off the table into the drawer",
        "slide the block into the open drawer",
        "sweep the block over the edge into the drawer",
        "nudge the block so it drops into the drawer",
        "push the block on the table down into the drawer",
        "shove the block until it falls into the drawer",
    ),
    "stack_block": (
        "put the block you are holding on top of the other block",
        "stack the held block onto another block",
        "place the grasped block on top of a block",
        "build a tower by setting the block on another one",
        "set the block down on top of the block on the table",
        "stack one block on the other",
    ),
    "unstack_block": (
        "take the top block off the stack",
        "remove the block from on top of the other block",
        "unstack the blocks",
        "lift the upper block off the stack",
        "take the stacked block down",
        "pull the top block off the tower",
    ),
    "turn_on_lightbulb": (
        "turn on the light bulb",
        "switch the light bulb on",
        "push the switch up to light the bulb",
        "move the switch up to turn the lamp on",
        "make the light bulb shine",
        "flip the switch so the bulb turns on",
    ),
    "turn_off_lightbulb": (
        "turn off the light bulb",
        "switch the light bulb off",
        "push the switch down to turn the bulb off",
        "slide the switch down to switch off the lamp",
        "make the light bulb go dark",
        "flip the switch so the bulb turns off",
    ),
    "turn_on_led": (
        "turn on the led",
        "press the button to switch the green light on",
        "push the button so the led lights up",
        "switch on the led light",
        "make the led glow by pressing the button",
        "press the button once to light the led",
    ),
    "turn_off_led": (
        "turn off the led",
        "press the button to switch the green light off",
        "push the button so the led goes dark",
        "switch off the led light",
        "make the led stop glowing by pressing the button",
        "press the button once to turn the led off",
    ),
}


def _training_table() -> dict[str, tuple[str, ...]]:
    table = dict(_FIXED)
    for template_name, phrasings in _COLOR_TEMPLATES.items():
        for c in COLORS:
            table[template_name.format(c=c)] = tuple(p.format(c=c) for p in phrasings)
    return {name: table[name] for name in TASK_NAMES}


TRAINING_INSTRUCTIONS: Mapping[str, tuple[str, ...]] = MappingProxyType(_training_table())


def eval_instruction(task: str) -> str:
    """The instruction CALVIN's evaluation gives for `task`."""
    task_index(task)
    return EVAL_INSTRUCTIONS[task]


def training_instructions(task: str) -> tuple[str, ...]:
    """This project's phrasings of `task` for recorded training data (never the eval instruction)."""
    task_index(task)
    return TRAINING_INSTRUCTIONS[task]


def training_instruction(task: str, index: int) -> str:
    """Phrasing number `index` (modulo their count): a deterministic choice, e.g. by episode number."""
    phrasings = training_instructions(task)
    return phrasings[int(index) % len(phrasings)]


def sample_training_instruction(task: str, rng: np.random.Generator) -> str:
    """A phrasing drawn uniformly with the caller's Generator."""
    phrasings = training_instructions(task)
    return phrasings[int(rng.integers(len(phrasings)))]


def _normalise(text: str) -> str:
    return " ".join(text.lower().replace(".", " ").split())


@lru_cache(maxsize=1)
def _instruction_index() -> dict[str, str]:
    index = {_normalise(text): task for task, text in EVAL_INSTRUCTIONS.items()}
    for task, phrasings in TRAINING_INSTRUCTIONS.items():
        index.update({_normalise(text): task for text in phrasings})
    return index


def task_for_instruction(instruction: str) -> str:
    """The task an instruction names: CALVIN's evaluation instruction or one of this project's
    training phrasings (case and spacing ignored). ValueError for any other text."""
    task = _instruction_index().get(_normalise(instruction))
    if task is None:
        raise ValueError(f"no task has the instruction {instruction!r} (expected one of CALVIN's evaluation instructions or a training phrasing)")
    return task
