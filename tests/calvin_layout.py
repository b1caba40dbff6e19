"""Hand-made datasets laid out exactly as CALVIN ships them (no project code writes them).

Like the real data: frame ids start far from 0 (358482, as in the debug dataset) and jump between
episodes, vectors are stored as float64, tactile keys are present, `auto_lang_ann.npy` and
`scene_info.npy` are pickled dicts, and validation has no `scene_info.npy`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

EPISODES = ((358482, 358541), (358600, 358639))  # 60 + 40 frames, a gap of 58 ids between them
ANNOTATIONS = (  # inclusive (start, end), task, instruction
    ((358482, 358500), "open_drawer", "pull the handle to open the drawer"),
    ((358495, 358541), "lift_red_block_table", "grasp and lift the red block"),  # overlaps, ends at episode end
    ((358600, 358611), "turn_on_led", "press the button to turn on the led light"),
    ((358620, 358639), "open_drawer", "open the drawer"),
)
STATIC, GRIPPER = (200, 200, 3), (84, 84, 3)


def frame_arrays(fid: int) -> dict[str, np.ndarray]:
    """Deterministic content per frame id; images encode the id so that tests can find frames."""
    rng = np.random.default_rng(fid)
    rel = rng.uniform(-1.0, 1.0, 7)
    rel[6] = 1.0 if rng.random() < 0.5 else -1.0
    robot_obs = rng.normal(size=15)
    actions = np.concatenate([robot_obs[:6] + rel[:6] * [0.02, 0.02, 0.02, 0.05, 0.05, 0.05], rel[6:]])
    static = rng.integers(0, 256, STATIC, dtype=np.uint8)
    static[0, 0, 0], static[0, 0, 1] = fid % 256, (fid // 256) % 256
    gripper = rng.integers(0, 256, GRIPPER, dtype=np.uint8)
    gripper[0, 0, 0] = fid % 256
    scene_obs = rng.normal(size=24)
    scene_obs[4:6] = scene_obs[4:6] > 0  # lightbulb and led: on or off, as in every CALVIN frame
    return {
        "actions": actions.astype(np.float64),
        "rel_actions": rel.astype(np.float64),
        "robot_obs": robot_obs.astype(np.float64),
        "scene_obs": scene_obs.astype(np.float64),
        "rgb_static": static,
        "rgb_gripper": gripper,
        "depth_static": rng.uniform(3.8, 6.2, STATIC[:2]).astype(np.float32),
        "depth_gripper": rng.uniform(0.0, 2.0, GRIPPER[:2]).astype(np.float32),
        "rgb_tactile": rng.integers(0, 256, (160, 120, 6), dtype=np.uint8),
        "depth_tactile": rng.uniform(0.0, 0.01, (160, 120, 2)).astype(np.float32),
    }


def lang_dict(annotations=ANNOTATIONS, with_emb: bool = True) -> dict:
    d = {
        "info": {"indx": [tuple(a[0]) for a in annotations], "episodes": []},
        "language": {"ann": [a[2] for a in annotations], "task": [a[1] for a in annotations]},
    }
    if with_emb:
        d["language"]["emb"] = np.random.default_rng(0).normal(size=(len(annotations), 1, 384)).astype(np.float32)
    return d


def write_split(split_dir: Path, episodes=EPISODES, annotations=ANNOTATIONS, with_emb: bool = True,
                scene_info: bool = True, lang_in_split: bool = False) -> Path:
    split_dir.mkdir(parents=True)
    for s, e in episodes:
        for fid in range(s, e + 1):
            np.savez_compressed(split_dir / f"episode_{fid:07d}.npz", **frame_arrays(fid))
    eps = np.asarray(episodes, dtype=np.int64)
    np.save(split_dir / "ep_start_end_ids.npy", eps)
    np.save(split_dir / "ep_lens.npy", eps[:, 1] - eps[:, 0] + 1)
    if scene_info:
        np.save(split_dir / "scene_info.npy", {"calvin_scene_D": [int(eps[0, 0]), int(eps[-1, 1])]})
    lang_path = split_dir / "auto_lang_ann.npy" if lang_in_split else split_dir / "lang_annotations" / "auto_lang_ann.npy"
    lang_path.parent.mkdir(exist_ok=True)
    np.save(lang_path, lang_dict(annotations, with_emb))
    (split_dir / "statistics.yaml").write_text(
        "robot_obs:\n- _target_: calvin_agent.utils.transforms.NormalizeVector\n  mean: [0.0]\n  std: [1.0]\n"
        "act_min_bound: [-1, -1, -1, -1, -1, -1, -1]\nact_max_bound: [1, 1, 1, 1, 1, 1, 1]\n"
    )
    return split_dir


def write_dataset(root: Path, with_emb: bool = True) -> Path:
    """training/ as above; validation/ with one short episode elsewhere in the id space, no scene_info."""
    write_split(root / "training", with_emb=with_emb)
    write_split(root / "validation", episodes=((553567, 553596),),
                annotations=(((553570, 553590), "turn_on_led", "press the button to turn on the led light"),),
                with_emb=with_emb, scene_info=False)
    return root
