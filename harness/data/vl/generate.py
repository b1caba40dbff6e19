"""The sim VQA dataset: scene states rendered by the static camera, questions answered by the simulator.

`generate(out, num_states, seed, scenes)` writes

    out/images/<scene>_<n>.png   one static-camera frame (200x200) per state
    out/train.json, out/val.json LLaVA-style entries (harness.data.vl.llava), one per question
    out/states.json              per state: image, scene, split, source, condition, settled scene_obs, facts
    out/meta.json                the arguments, counts per split and question type, timing

State n is drawn from its own generator `default_rng([seed, n])` and goes to scene `scenes[n % len(scenes)]`,
so a dataset is reproducible from (seed, scenes), and a random state does not depend on how many were asked for
(a start condition's state does, through its split: below).
The split is by state: `round(val_fraction * num_states)` states (at least one when there are two or
more), chosen by a permutation seeded with `seed`, hold all their questions in val.json. A CALVIN start
condition (`sample_calvin_state`, 192 of them) renders the same picture every time it is drawn, so the
conditions are split too: `round(val_fraction * 192)` of them, chosen by a permutation seeded with
`(seed, CONDITION_SPLIT_STREAM)`, are drawn only by validation states and the rest only by training states,
and no picture of one split recurs in the other (docs/vl_cotraining.md, "Split by state").
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image
from tqdm import tqdm

from harness.data.vl.llava import llava_entry
from harness.data.vl.questions import ask_all
from harness.data.vl.scene import CALVIN_CONDITIONS, SceneRenderer, sample_state
from harness.sim.layout import parse_scenes

CONDITION_SPLIT_STREAM = 2**32  # the conditions' split draws from (seed, this): no state's (seed, n) stream
MAX_REDRAWS = 50  # planned states of one index rejected in a row before giving up


def held_out(count: int, val_fraction: float, seed: int | Sequence[int]) -> np.ndarray:
    """Boolean (count,): True for the validation states (or start conditions): round(val_fraction * count) of
    them, at least one and at most all but one when there are two or more (each split keeps something)."""
    if not 0 <= val_fraction < 1:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n_val = round(val_fraction * count)
    if val_fraction > 0 and count >= 2:
        n_val = min(max(n_val, 1), count - 1)
    is_val = np.zeros(count, dtype=bool)
    is_val[np.random.default_rng(seed).permutation(count)[:n_val]] = True
    return is_val


def generate(out: str | Path, num_states: int, seed: int = 0, scenes: str | Sequence[str] = "D",
             val_fraction: float = 0.1, progress: bool = False) -> dict[str, Any]:
    """Write the dataset (see the module doc) into the new or empty folder `out`; return meta.json's dict."""
    out = Path(out)
    if num_states < 1:
        raise ValueError(f"num_states must be >= 1, got {num_states}")
    if out.exists() and any(out.iterdir()):
        raise ValueError(f"{out} exists and is not empty: choose a new folder")
    scene_names = parse_scenes(scenes)
    is_val = held_out(num_states, val_fraction, seed)
    val_conditions = held_out(len(CALVIN_CONDITIONS), val_fraction, (seed, CONDITION_SPLIT_STREAM))
    conditions = {"val": np.flatnonzero(val_conditions).tolist(), "train": np.flatnonzero(~val_conditions).tolist()}
    (out / "images").mkdir(parents=True, exist_ok=True)
    renderers: dict[str, SceneRenderer] = {}
    entries: dict[str, list[dict[str, Any]]] = {"train": [], "val": []}
    states: list[dict[str, Any]] = []
    redraws = 0
    start = time.perf_counter()
    try:
        for n in tqdm(range(num_states), desc="states", unit="state", disable=not progress):
            scene = scene_names[n % len(scene_names)]
            renderer = renderers.get(scene) or renderers.setdefault(scene, SceneRenderer(scene))
            rng = np.random.default_rng([seed, n])
            split = "val" if is_val[n] else "train"
            for _ in range(MAX_REDRAWS):
                rendered = renderer.render(sample_state(rng, renderer.layout, conditions[split]))
                if rendered is not None:
                    break
                redraws += 1
            else:
                raise RuntimeError(f"state {n} (scene {scene}): {MAX_REDRAWS} planned states in a row did not settle as planned")
            name = f"{scene}_{n:06d}"
            image = f"images/{name}.png"
            Image.fromarray(rendered.image).save(out / image)
            for qa in ask_all(rendered.facts, rng):
                entries[split].append(llava_entry(f"{name}_{qa.type}", image, qa.question, qa.answer, question_type=qa.type))
            states.append({"image": image, "scene": scene, "split": split, "source": rendered.source,
                           "condition": rendered.condition,
                           "scene_obs": [round(float(v), 6) for v in rendered.scene_obs], "facts": rendered.facts.to_dict()})
    finally:
        for renderer in renderers.values():
            renderer.close()
    seconds = time.perf_counter() - start
    for split, items in entries.items():
        (out / f"{split}.json").write_text(json.dumps(items, indent=1))
    (out / "states.json").write_text(json.dumps(states))
    meta = {
        "generator": "harness.data.vl.generate", "num_states": num_states, "seed": seed, "scenes": list(scene_names),
        "val_fraction": val_fraction, "redrawn_states": redraws, "seconds": round(seconds, 2),
        "states_per_second": round(num_states / seconds, 2),
        "splits": {split: {"states": int((is_val if split == "val" else ~is_val).sum()),
                           "calvin_conditions": len(conditions[split]), "questions": len(items),
                           "per_type": dict(sorted(Counter(e["question_type"] for e in items).items()))}
                   for split, items in entries.items()},
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return meta
