"""The sim VQA generator on the real built-in scene: hand-set states, their answers, the dataset on disk."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness.data.vl.__main__ import main as vl_main
from harness.data.vl.generate import generate
from harness.sim.layout import get_layout, parse_scenes
from harness.data.vl.llava import LlavaDataset
from harness.data.vl.questions import QUESTION_TYPES, ask_all
from harness.data.vl.scene import SceneRenderer, block_masks

# Hand-set states of scene D (block centres; tables at z 0.46, the plank 0.461, the drawer floor 0.362).
# The pictures were checked by eye: world +x is to the right in the static camera's image.
STATE_A = dict(door=0.28, drawer=0.22, led=1, bulb=1,  # door pushed left, drawer fully open, both lights on
               blocks={"red": (-0.25, -0.08, 0.46), "blue": (0.18, -0.30, 0.362), "pink": (0.05, 0.09, 0.461)})
STATE_B = dict(door=0.0, drawer=0.0, led=0, bulb=0,  # door right, drawer closed, lights off, pink on blue
               blocks={"red": (-0.25, 0.09, 0.461), "blue": (0.25, -0.08, 0.46), "pink": (0.25, -0.08, 0.50)})
STATE_C = dict(door=0.0, drawer=0.0, led=0, bulb=1,  # red in the right of the cabinet, behind the door
               blocks={"red": (0.05, 0.09, 0.461), "blue": (-0.30, -0.10, 0.46), "pink": (0.30, -0.10, 0.46)})


@pytest.fixture(scope="module")
def renderer():
    r = SceneRenderer("D")
    yield r
    r.close()


def scene_obs(layout, door, drawer, led, bulb, blocks) -> np.ndarray:
    obs = np.zeros(24)
    obs[:6] = [door, drawer, 0.0, 0.088 if bulb else 0.0, bulb, led]  # the switch up exactly when the bulb is on
    for color, pos in blocks.items():
        obs[layout.block_obs_slice(color)] = [*pos, 0.0, 0.0, 0.0]
    return obs


def render(renderer, state):
    rendered = renderer.settle(scene_obs(renderer.layout, **state))
    assert rendered is not None, "the hand-set state did not come to rest"
    return rendered


def answers_by_question(facts, seeds: int = 200) -> dict[str, str]:
    """Every question asked about the scene over many draws -> its answer (one answer per question)."""
    out: dict[str, str] = {}
    for seed in range(seeds):
        for qa in ask_all(facts, np.random.default_rng(seed)):
            assert out.setdefault(qa.question, qa.answer) == qa.answer, qa.question
    return out


def test_drawer_door_and_lights_answers(renderer):
    a = answers_by_question(render(renderer, STATE_A).facts)
    b = answers_by_question(render(renderer, STATE_B).facts)
    expected = {  # question: (answer in A, answer in B)
        "Is the drawer open?": ("yes", "no"), "Is the drawer closed?": ("no", "yes"),
        "Is the drawer open or closed?": ("open", "closed"), "Is the drawer shut?": ("no", "yes"),
        "Has the drawer been pulled out?": ("yes", "no"), "What state is the drawer in?": ("open", "closed"),
        "Where is the sliding door?": ("left", "right"), "Is the sliding door pushed to the left?": ("yes", "no"),
        "Is the sliding door on the right side?": ("no", "yes"),
        "Is the green light on?": ("yes", "no"), "Is the LED on?": ("yes", "no"), "Is the green light off?": ("no", "yes"),
        "Is the green lamp on or off?": ("on", "off"),
        "Is the yellow light on?": ("yes", "no"), "Is the light bulb on?": ("yes", "no"),
        "Is the yellow lamp off?": ("no", "yes"), "Is the light bulb on or off?": ("on", "off"),
        "Is the LED lit?": ("yes", "no"), "Is the bulb lit?": ("yes", "no"),
    }
    for question, (in_a, in_b) in expected.items():
        assert (a[question], b[question]) == (in_a, in_b), question
    c = answers_by_question(render(renderer, STATE_C).facts)  # LED off but bulb on: the lights are told apart
    assert (c["Is the green light on?"], c["Is the yellow light on?"]) == ("no", "yes")


def test_the_block_on_each_surface(renderer):
    facts_a, facts_b = render(renderer, STATE_A).facts, render(renderer, STATE_B).facts
    assert {c: b.place for c, b in facts_a.blocks.items()} == {"red": "table", "blue": "drawer", "pink": "slider_right"}
    assert {c: b.place for c, b in facts_b.blocks.items()} == {"red": "slider_left", "blue": "table", "pink": "on_blue"}
    a, b = answers_by_question(facts_a), answers_by_question(facts_b)
    assert a["Which block is on the table?"] == "the red block"
    assert a["Which block is in the drawer?"] == "the blue block"
    assert a["Which block is in the sliding cabinet?"] == "the pink block"
    assert a["Where is the blue block?"] == "in the drawer"
    assert a["Where is the pink block?"] == "in the right side of the cabinet"
    assert a["How many blocks are on the table?"] == "one"
    assert b["Which block is on the table?"] == "the blue block"  # pink is on the blue block, not on the table
    assert b["Where is the pink block?"] == "on the blue block"
    assert b["Where is the blue block?"] == "on the table"
    assert b["Where is the red block?"] == "in the left side of the cabinet"
    assert b["How many blocks are on the table?"] == "one"
    assert not any("in the drawer" in q for q in b)  # a closed drawer shows nothing: not asked about


def test_left_and_right_are_image_space(renderer):
    a = answers_by_question(render(renderer, STATE_A).facts)
    assert a["Which block is to the right of the red block?"] == "the blue block and the pink block"
    assert a["Which block is to the left of the red block?"] == "no block"
    b = answers_by_question(render(renderer, STATE_B).facts)
    assert b["Which block is to the right of the red block?"] == "the blue block and the pink block"
    assert not any(q.endswith(("of the blue block?", "of the pink block?")) for q in b)  # stacked: same column
    c = answers_by_question(render(renderer, STATE_C).facts)
    assert c["Which block is to the left of the pink block?"] == "the blue block"  # the hidden red one does not count


def test_hidden_blocks_are_not_asked_about(renderer):
    rendered = render(renderer, STATE_C)
    red = rendered.facts.blocks["red"]
    assert red.place == "slider_right" and not red.visible  # behind the sliding door
    c = answers_by_question(rendered.facts)
    assert not any("red block" in q for q in c)
    assert not any("sliding cabinet" in q for q in c)  # a block on it is hidden
    assert all("red" not in a for q, a in c.items())
    assert c["Describe the scene."] == ("The drawer is closed, the sliding door is on the right, the green light is off "
                                        "and the yellow light is on. The blue block is on the table and the pink block "
                                        "is on the table.")


def test_block_pixels_are_where_the_image_shows_the_block(renderer):
    rendered = render(renderer, STATE_A)
    masks = block_masks(renderer.camera.get_info(), rendered.depth, renderer.layout)  # the rendered state
    rgb = rendered.image.astype(int)
    r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
    colour = {"red": (r > g + 60) & (r > b + 60), "blue": (b > r + 60) & (b > g + 60), "pink": (r > g + 60) & (b > g + 60)}
    for name, mask in masks.items():
        assert mask.sum() > 100, name
        assert colour[name][mask].mean() > 0.9, name  # the pixels assigned to a block have its colour
        cols = np.flatnonzero(mask.any(axis=0))
        assert cols.min() <= rendered.facts.blocks[name].u <= cols.max() + 1  # the projected centre is on it


def test_generate_writes_llava_json_split_by_state(tmp_path):
    meta = generate(tmp_path / "a", num_states=8, seed=3, scenes="D", val_fraction=0.25)
    assert meta["splits"]["train"]["states"] == 6 and meta["splits"]["val"]["states"] == 2
    train, val = LlavaDataset(tmp_path / "a" / "train.json"), LlavaDataset(tmp_path / "a" / "val.json")
    assert not {ex.image for ex in train.examples} & {ex.image for ex in val.examples}
    assert len({ex.image for ex in train.examples} | {ex.image for ex in val.examples}) == 8
    assert set(ex.question_type for ex in train.examples) <= set(QUESTION_TYPES)
    item = train[0]
    assert item["image"].shape == (200, 200, 3) and item["image"].dtype == np.uint8 and "<image>" not in item["prompt"]
    states = json.loads((tmp_path / "a" / "states.json").read_text())
    assert [s["split"] for s in states].count("val") == 2
    assert meta["splits"]["train"]["questions"] == len(train)
    with pytest.raises(ValueError, match="not empty"):
        generate(tmp_path / "a", num_states=1)


def test_start_conditions_are_split_so_no_held_out_picture_is_in_training(tmp_path, monkeypatch):
    """A CALVIN start condition always renders the same picture: validation states draw only held-out conditions
    (round(0.25 x 192) = 48 of them), training states only the others, so no image of one split is in the other."""
    import hashlib

    from harness.data.vl import scene as vl_scene
    from harness.data.vl.generate import CONDITION_SPLIT_STREAM, held_out

    monkeypatch.setattr(vl_scene, "CALVIN_CONDITION_FRACTION", 1.0)  # every state a start condition
    meta = generate(tmp_path / "a", num_states=12, seed=2, scenes="D", val_fraction=0.25)
    assert (meta["splits"]["val"]["calvin_conditions"], meta["splits"]["train"]["calvin_conditions"]) == (48, 144)
    val_conditions = set(np.flatnonzero(held_out(192, 0.25, (2, CONDITION_SPLIT_STREAM))).tolist())
    states = json.loads((tmp_path / "a" / "states.json").read_text())
    assert {s["source"] for s in states} == {"calvin_condition"}
    for s in states:
        assert (s["condition"] in val_conditions) == (s["split"] == "val"), s["image"]
    digests = {split: {hashlib.sha256((tmp_path / "a" / s["image"]).read_bytes()).hexdigest()
                       for s in states if s["split"] == split} for split in ("train", "val")}
    assert digests["val"] and not digests["val"] & digests["train"]


def test_each_split_keeps_a_state_and_a_start_condition():
    from harness.data.vl.generate import held_out

    assert held_out(2, 0.9, 0).sum() == 1 and held_out(192, 0.999, 0).sum() == 191  # not all held out
    assert held_out(10, 0.01, 0).sum() == 1 and held_out(1, 0.5, 0).sum() == 0 and held_out(5, 0.0, 0).sum() == 0


def test_a_state_draws_its_start_condition_from_the_ones_it_is_given():
    from harness.data.vl.scene import CALVIN_CONDITIONS, sample_calvin_state

    layout = get_layout("D")  # no simulator needed: a planned state is numbers
    drawn = {sample_calvin_state(np.random.default_rng(i), layout, [3, 77]).condition for i in range(40)}
    assert drawn == {3, 77}
    planned = sample_calvin_state(np.random.default_rng(0), layout, [77])
    assert planned.places == {c: CALVIN_CONDITIONS[77][f"{c}_block"] for c in ("red", "blue", "pink")}
    with pytest.raises(ValueError, match="conditions is empty"):
        sample_calvin_state(np.random.default_rng(0), layout, [])


def test_generation_is_deterministic_by_seed(tmp_path, capsys):
    generate(tmp_path / "a", num_states=3, seed=5, scenes="D")
    assert vl_main(["generate", str(tmp_path / "b"), "--num-states", "3", "--seed", "5", "--scene", "D"]) == 0
    assert '"num_states": 3' in capsys.readouterr().out
    generate(tmp_path / "c", num_states=3, seed=6, scenes="D")
    for name in ("train.json", "val.json", "states.json"):
        assert (tmp_path / "a" / name).read_text() == (tmp_path / "b" / name).read_text()
    assert (tmp_path / "a" / "images" / "D_000002.png").read_bytes() == (tmp_path / "b" / "images" / "D_000002.png").read_bytes()
    assert (tmp_path / "a" / "train.json").read_text() != (tmp_path / "c" / "train.json").read_text()
    with pytest.raises(SystemExit):
        vl_main(["generate", str(tmp_path / "d"), "--num-states", "3", "--scenes", "D"])
    assert "--scenes is now --scene" in capsys.readouterr().err


def test_parse_scenes():
    assert parse_scenes("D") == ("D",)
    assert parse_scenes("ABCD") == parse_scenes("A,B,C,D") == parse_scenes(["A", "B", "C", "D"]) == tuple("ABCD")
    assert parse_scenes("calvin_scene_B") == ("B",)
    with pytest.raises(ValueError, match="scenes must name some of A, B, C, D"):
        parse_scenes("E")
