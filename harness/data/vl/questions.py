"""Questions about a scene and their answers, computed from `SceneFacts` (the settled simulator).

Each question type has several phrasings (written for this project); one is drawn per question. Answers
are short and canonical, so that exact match (after `harness.eval.vqa.normalize_answer`) is a fair test:

| type | example question | answers |
|---|---|---|
| drawer | Is the drawer open? / Is the drawer open or closed? | yes, no / open, closed |
| door | Is the sliding door on the left or on the right? / Is the sliding door pushed to the left? | left, right / yes, no |
| green_light | Is the green light on? / Is the LED on or off? / Is the green lamp lit? | yes, no / on, off |
| yellow_light | Is the yellow light on? / Is the light bulb off? / Is the bulb lit? | yes, no / on, off |
| block_on_surface | Which block is in the drawer? | the pink block, the red block and the blue block, no block |
| block_place | Where is the red block? | on the table, in the drawer, in the left side of the cabinet, on the blue block, ... |
| left_right | Which block is to the left of the red block? | the pink block, the blue block and the pink block, no block |
| count_table | How many blocks are on the table? | zero, one, two, three |
| caption | Describe the scene. | The drawer is open, the sliding door is on the left, ... |

Only what the static camera shows is asked about: block questions name visible blocks only, a surface is
asked about only when every block on it is visible (and the drawer only when it is open), and captions
leave hidden blocks out. "Left of" is image space: a block is left of another when its projected centre
lies more than `SIDE_MARGIN` pixels further left (only blocks count, not furniture); when another
visible block is within the margin the question is ambiguous and not asked. A block stacked on another is on that block, not on the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

from harness.data.vl.scene import SceneFacts
from harness.sim.layout import BLOCK_COLORS

QUESTION_TYPES = ("drawer", "door", "green_light", "yellow_light", "block_on_surface", "block_place",
                  "left_right", "count_table", "caption")
SIDE_MARGIN = 8.0  # pixels of the 200 px image (~3 cm on the table)
NUMBER_WORDS = ("zero", "one", "two", "three")
NO_BLOCK = "no block"


@dataclass(frozen=True)
class QA:
    type: str
    question: str
    answer: str


Answer = Callable[[bool], str]  # the answer given the fact the phrasing asks about


def _yes_no(fact: bool) -> str:
    return "yes" if fact else "no"


def _negated(fact: bool) -> str:
    return "no" if fact else "yes"


def _either(true: str, false: str) -> Answer:
    return lambda fact: true if fact else false


# Phrasings of the yes/no-style questions: (question, answer from the fact). The fact is "drawer open",
# "door on the left", "light on".
DRAWER_PHRASINGS: tuple[tuple[str, Answer], ...] = (
    ("Is the drawer open?", _yes_no),
    ("Is the drawer closed?", _negated),
    ("Is the drawer open or closed?", _either("open", "closed")),
    ("Has the drawer been pulled out?", _yes_no),
    ("Is the drawer shut?", _negated),
    ("What state is the drawer in?", _either("open", "closed")),
)
DOOR_PHRASINGS: tuple[tuple[str, Answer], ...] = (
    ("Is the sliding door on the left or on the right?", _either("left", "right")),
    ("Where is the sliding door?", _either("left", "right")),
    ("Is the sliding door pushed to the left?", _yes_no),
    ("Is the sliding door on the right side?", _negated),
    ("Which side of the cabinet is the sliding door on?", _either("left", "right")),
)
LIGHT_PHRASINGS: tuple[tuple[str, Answer], ...] = (  # {light}: one of the light's names below
    ("Is the {light} on?", _yes_no),
    ("Is the {light} off?", _negated),
    ("Is the {light} on or off?", _either("on", "off")),
    ("Is the {light} lit?", _yes_no),
)
LIGHT_NAMES = {"green_light": ("green light", "LED", "green lamp"),
               "yellow_light": ("yellow light", "light bulb", "yellow lamp", "bulb")}
SURFACE_PHRASINGS = (
    "Which block is {surface}?",
    "What block is {surface}?",
    "Which block can you see {surface}?",
    "Name the block that is {surface}.",
)
SURFACES = {  # surface -> (how questions name it, places on it)
    "table": ("on the table", ("table",)),
    "drawer": ("in the drawer", ("drawer",)),
    "cabinet": ("in the sliding cabinet", ("slider_left", "slider_right")),
}
PLACE_PHRASINGS = (
    "Where is the {color} block?",
    "Where is the {color} block placed?",
    "Where can you see the {color} block?",
    "In which place is the {color} block?",
)
PLACE_ANSWERS = {
    "table": "on the table",
    "drawer": "in the drawer",
    "slider_left": "in the left side of the cabinet",
    "slider_right": "in the right side of the cabinet",
}
SIDE_PHRASINGS = (
    "Which block is to the {side} of the {color} block?",
    "What block is {side} of the {color} block?",
    "Which blocks are on the {side} of the {color} block?",
    "Which block do you see to the {side} of the {color} block?",
)
COUNT_PHRASINGS = (
    "How many blocks are on the table?",
    "How many blocks lie on the table?",
    "Count the blocks on the table.",
    "What is the number of blocks on the table?",
)
CAPTION_PHRASINGS = (
    "Describe the scene.",
    "Give a short caption of the image.",
    "What do you see?",
    "Describe the state of the table in one sentence.",
)


def block_list(colors: list[str]) -> str:
    """["red"] -> "the red block"; ["red", "pink"] -> "the red block and the pink block" (BLOCK_COLORS order)."""
    names = [f"the {c} block" for c in BLOCK_COLORS if c in colors]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def place_answer(place: str) -> str:
    return f"on the {place.removeprefix('on_')} block" if place.startswith("on_") else PLACE_ANSWERS[place]


def _pick(rng: np.random.Generator, options):
    return options[int(rng.integers(len(options)))]


def _fact_question(qtype: str, phrasings: tuple[tuple[str, Answer], ...], fact: bool, rng: np.random.Generator) -> QA:
    question, answer = _pick(rng, phrasings)
    return QA(qtype, question, answer(fact))


def _light_question(qtype: str, on: bool, rng: np.random.Generator) -> QA:
    question, answer = _pick(rng, LIGHT_PHRASINGS)
    return QA(qtype, question.format(light=_pick(rng, LIGHT_NAMES[qtype])), answer(on))


def ask_block_on_surface(facts: SceneFacts, rng: np.random.Generator) -> QA | None:
    askable = []
    for surface, (words, places) in SURFACES.items():
        on = [b for b in facts.blocks.values() if b.place in places]
        if all(b.visible for b in on) and (surface != "drawer" or facts.drawer_open):
            askable.append((words, [b.color for b in on]))
    if not askable:
        return None
    words, colors = _pick(rng, askable)
    return QA("block_on_surface", _pick(rng, SURFACE_PHRASINGS).format(surface=words),
              block_list(colors) if colors else NO_BLOCK)


def ask_block_place(facts: SceneFacts, rng: np.random.Generator) -> QA | None:
    visible = [b for b in facts.blocks.values() if b.visible and b.place != "grasped"]
    if not visible:
        return None
    block = _pick(rng, visible)
    return QA("block_place", _pick(rng, PLACE_PHRASINGS).format(color=block.color), place_answer(block.place))


def ask_left_right(facts: SceneFacts, rng: np.random.Generator) -> QA | None:
    visible = [b for b in facts.blocks.values() if b.visible]
    clear = [b for b in visible if all(abs(o.u - b.u) > SIDE_MARGIN for o in visible if o is not b)]
    if not clear:
        return None
    block = _pick(rng, clear)
    side = _pick(rng, ("left", "right"))
    sign = -1 if side == "left" else 1
    others = [o.color for o in visible if o is not block and sign * (o.u - block.u) > SIDE_MARGIN]
    question = _pick(rng, SIDE_PHRASINGS).format(side=side, color=block.color)
    return QA("left_right", question, block_list(others) if others else NO_BLOCK)


def ask_count_table(facts: SceneFacts, rng: np.random.Generator) -> QA | None:
    on_table = [b for b in facts.blocks.values() if b.place == "table"]
    if not all(b.visible for b in on_table):
        return None
    return QA("count_table", _pick(rng, COUNT_PHRASINGS), NUMBER_WORDS[len(on_table)])


def caption(facts: SceneFacts) -> str:
    """The canonical caption: furniture and lights, then every visible block's place."""
    on_off = {True: "on", False: "off"}
    text = (f"The drawer is {'open' if facts.drawer_open else 'closed'}, the sliding door is on the {facts.door}, "
            f"the green light is {on_off[facts.led]} and the yellow light is {on_off[facts.bulb]}.")
    parts = [f"the {b.color} block is {place_answer(b.place)}" for b in facts.blocks.values() if b.visible]
    if parts:
        blocks = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
        text += " " + blocks[0].upper() + blocks[1:] + "."
    return text


def ask_all(facts: SceneFacts, rng: np.random.Generator) -> list[QA]:
    """One question per type (in QUESTION_TYPES order), except the types with nothing visible to ask."""
    qas = [
        _fact_question("drawer", DRAWER_PHRASINGS, facts.drawer_open, rng),
        _fact_question("door", DOOR_PHRASINGS, facts.door == "left", rng),
        _light_question("green_light", facts.led, rng),
        _light_question("yellow_light", facts.bulb, rng),
        ask_block_on_surface(facts, rng),
        ask_block_place(facts, rng),
        ask_left_right(facts, rng),
        ask_count_table(facts, rng),
        QA("caption", _pick(rng, CAPTION_PHRASINGS), caption(facts)),
    ]
    return [qa for qa in qas if qa is not None]
