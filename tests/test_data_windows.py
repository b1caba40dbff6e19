"""Reading a dataset laid out exactly as CALVIN ships it, and the windows made from it."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
import torch

from agents.vla.config import VLAConfig
from harness.data.calvin_format import CalvinSplit, rel_actions_from_absolute
from harness.data.config import DataConfig, build_dataset
from harness.data.normalization import ActionNormalizer
from harness.data.windows import NpzFrameSource, WindowDataset, WindowOptions, WindowSpec, collate_windows, random_shift
from tests.calvin_layout import ANNOTATIONS, EPISODES, frame_arrays, write_dataset, write_split

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def calvin_root(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("calvin"))


def expected_chunk(t0: int, end: int, W: int, C: int):
    """Independent statement of the window contract, from the hand-made per-frame actions."""
    acts = np.zeros((W, C, 7), np.float32)
    mask = np.zeros((W, C), bool)
    for i in range(W):
        for j in range(C):
            f = t0 + i + j
            mask[i, j] = f <= end
            rel = frame_arrays(min(f, end))["rel_actions"]
            acts[i, j, :6] = np.clip(rel[:6], -0.65, 0.65) / 0.65
            acts[i, j, 6] = 1.0 if rel[6] > 0 else 0.0
    return acts, mask


@pytest.mark.parametrize("with_emb", [True, False])
def test_real_layout_loads(tmp_path, with_emb):
    split = CalvinSplit(write_dataset(tmp_path, with_emb=with_emb), "training")
    assert split.episodes.tolist() == [list(e) for e in EPISODES]
    assert split.num_frames == 100
    assert not split.has_range(358540, 358600)  # the gap between the episodes
    lang = split.lang
    assert [tuple(x) for x in lang.indx.tolist()] == [a[0] for a in ANNOTATIONS]
    assert lang.task == [a[1] for a in ANNOTATIONS] and lang.ann == [a[2] for a in ANNOTATIONS]
    assert (lang.emb is not None) == with_emb and (not with_emb or lang.emb.shape == (4, 1, 384))
    frame = split.load_frame(358600)  # the 8 CALVIN keys; tactile keys are present but not needed
    assert set(frame) == {"actions", "rel_actions", "robot_obs", "scene_obs", "rgb_static", "rgb_gripper", "depth_static", "depth_gripper"}
    assert frame["rel_actions"].dtype == np.float32  # stored float64, as in the real data
    np.testing.assert_array_equal(frame["rgb_static"], frame_arrays(358600)["rgb_static"])
    assert split.scene_info() == {"calvin_scene_D": [358482, 358639]}
    assert CalvinSplit(tmp_path, "validation").scene_info() is None  # real validation splits have none


def test_lang_annotations_fallback_location(tmp_path):
    split = CalvinSplit(write_split(tmp_path / "training", lang_in_split=True))
    assert split.lang_path.name == "auto_lang_ann.npy" and split.lang_path.parent == split.path
    assert len(split.lang) == len(ANNOTATIONS)


def test_windows_chunks_masks_against_hand_made_actions(calvin_root):
    W, C = 8, 10
    ds = WindowDataset(NpzFrameSource(calvin_root, "training"), WindowSpec(W, C), ActionNormalizer())
    # every start frame from s to e - W + 1: e - s + 2 - W windows per segment
    assert len(ds) == sum(e - s + 2 - W for (s, e), _, _ in ANNOTATIONS) == 12 + 40 + 5 + 13
    starts = [ds.window(i) for i in range(len(ds))]
    for k, ((s, e), task, ann) in enumerate(ANNOTATIONS):
        mine = [t0 for seg, t0 in starts if seg == k]
        assert mine == list(range(s, e - W + 2)), task
    for index in (0, 11, 12, 51, len(ds) - 1):
        k, t0 = ds.window(index)
        (s, e), task, ann = ANNOTATIONS[k]
        item = ds[index]
        acts, mask = expected_chunk(t0, e, W, C)
        np.testing.assert_array_equal(item["action_mask"], mask)
        np.testing.assert_allclose(item["actions"][mask], acts[mask], atol=1e-6)
        assert item["instruction"] == ann and item["task"] == task
        assert [int(f[0, 0, 0]) for f in item["rgb_static"]] == [(t0 + i) % 256 for i in range(W)]
        np.testing.assert_allclose(item["robot_obs"][0], frame_arrays(t0)["robot_obs"].astype(np.float32))
    # the last window of a segment: its last frame is the segment's last frame and is a valid target
    k, t0 = ds.window(11)
    e = ANNOTATIONS[k][0][1]
    assert t0 + W - 1 == e
    item = ds[11]
    assert item["action_mask"][W - 1].tolist() == [True] + [False] * (C - 1)
    assert item["action_mask"][0].tolist() == [True] * W + [False] * (C - W)


def test_normalisation_round_trip(calvin_root):
    ds = WindowDataset(NpzFrameSource(calvin_root, "training"), WindowSpec(4, 3), ActionNormalizer())
    k, t0 = ds.window(3)
    item = ds[3]
    back = ds.normalizer.denormalize(item["actions"])
    for i in range(4):
        for j in range(3):
            rel = frame_arrays(t0 + i + j)["rel_actions"]
            np.testing.assert_allclose(back[i, j, :6], np.clip(rel[:6], -0.65, 0.65), atol=1e-6)
            assert back[i, j, 6] == rel[6]


def test_zscore_targets_lie_in_the_heads_range_and_round_trip_within_three_std():
    """The heads' arm outputs are bounded to [-1, 1]: plain z-scores put a third of the targets beyond what any
    head could predict (a target 2 std out came back as 1 std)."""
    norm = ActionNormalizer("zscore", mean=(0.1,) * 6, std=(0.3,) * 6)
    rel = np.array([[0.7, -0.5, 0.1, 0.95, -0.79, 0.4, 1.0], [2.0, -2.0, 0, 0, 0, 0, -1.0]])
    z = norm.normalize(rel)
    assert np.all(np.abs(z[:, :6]) <= 1)
    np.testing.assert_allclose(norm.denormalize(z)[0], rel[0], atol=1e-6)  # within 3 std: exact
    np.testing.assert_allclose(norm.denormalize(z)[1, :2], [1.0, -0.8], atol=1e-6)  # beyond: at 3 std


def test_rel_actions_from_absolute():
    fid = 358490
    f = frame_arrays(fid)
    np.testing.assert_allclose(rel_actions_from_absolute(f["actions"], f["robot_obs"]), f["rel_actions"], atol=1e-5)
    obs = np.zeros(15)
    obs[3:6] = [3.13, -3.13, 0.0]
    act = np.array([0.1, -0.004, 0.0, -3.13, 3.13, 0.01, -1.0])  # euler crosses +-pi: the deltas are small
    rel = rel_actions_from_absolute(act, obs)
    d = 2 * np.pi - 6.26
    np.testing.assert_allclose(rel, [1.0, -0.2, 0.0, 20 * d, -20 * d, 0.2, -1.0], atol=1e-5)


def test_random_shift_is_replicate_pad_and_crop_and_consistent_over_the_window(calvin_root):
    frames = np.random.default_rng(1).integers(0, 256, (3, 12, 10, 3), dtype=np.uint8)
    pad = 4
    padded = np.pad(frames, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    for dy, dx in ((0, 0), (8, 8), (3, 7)):
        np.testing.assert_array_equal(random_shift(frames, pad, dy, dx), padded[:, dy : dy + 12, dx : dx + 10])
    spec = WindowSpec(4, 2, cameras=("static", "gripper"))
    plain = WindowDataset(NpzFrameSource(calvin_root, "training"), spec, ActionNormalizer())
    aug = WindowDataset(NpzFrameSource(calvin_root, "training"), spec, ActionNormalizer(),
                        WindowOptions(augment=True, rgb_pad=10, gripper_pad=4))
    torch.manual_seed(3)
    a, p = aug[5], plain[5]
    shifts = []
    for key, pad in (("rgb_static", 10), ("rgb_gripper", 4)):
        padded = np.pad(p[key], ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
        h, w = p[key].shape[1:3]
        found = [(dy, dx) for dy in range(2 * pad + 1) for dx in range(2 * pad + 1)
                 if np.array_equal(a[key], padded[:, dy : dy + h, dx : dx + w])]
        assert len(found) == 1, key  # one shift explains every frame of the window
        shifts.append(found[0])
    assert shifts != [(10, 10), (4, 4)]  # seed 3 does shift (the zero shift would be (pad, pad))
    np.testing.assert_array_equal(a["actions"], p["actions"])


def test_collate_is_the_architecture_batch(calvin_root):
    ds = WindowDataset(NpzFrameSource(calvin_root, "training"), WindowSpec(3, 5), ActionNormalizer())
    batch = collate_windows([ds[0], ds[40]])
    assert set(batch) == {"rgb_static", "robot_obs", "actions", "action_mask", "instruction", "task"}
    assert batch["rgb_static"].dtype == torch.uint8 and batch["rgb_static"].shape == (2, 3, 200, 200, 3)
    assert batch["robot_obs"].dtype == torch.float32 and batch["robot_obs"].shape == (2, 3, 15)
    assert batch["actions"].dtype == torch.float32 and batch["actions"].shape == (2, 3, 5, 7)
    assert batch["action_mask"].dtype == torch.bool and batch["action_mask"].shape == (2, 3, 5)
    assert batch["task"] == ["open_drawer", "lift_red_block_table"]
    gripper = WindowDataset(ds.source, WindowSpec(3, 5, cameras=("static", "gripper"), proprio=False), ActionNormalizer())
    b = collate_windows([gripper[0]])
    assert b["rgb_gripper"].shape == (1, 3, 84, 84, 3) and "robot_obs" not in b
    state = WindowDataset(ds.source, WindowSpec(3, 5, scene_state=True), ActionNormalizer())  # the state loss's target
    b = collate_windows([state[40]])
    _, t0 = state.window(40)
    assert b["scene_obs"].shape == (1, 3, 24) and "scene_obs" not in batch
    assert np.allclose(b["scene_obs"][0].numpy(), ds.source.read({"scene_obs": (t0, t0 + 3)})["scene_obs"])


def test_scene_state_gives_the_blocks_in_colour_order_in_every_scene(calvin_root, tmp_path):
    """scene_obs lists the blocks in each scene's own order (A: pink, blue, red); the state loss's target is
    red, blue, pink wherever the frame was recorded, by the split's scene_info."""
    shutil.copytree(calvin_root / "training", tmp_path / "training")
    d = WindowDataset(NpzFrameSource(tmp_path, "training"), WindowSpec(3, 5, scene_state=True), ActionNormalizer())
    first, last = int(d.lang.indx[:, 0].min()), int(d.lang.indx[:, 1].max())
    np.save(tmp_path / "training" / "scene_info.npy", {"calvin_scene_A": [first, last]})
    a = WindowDataset(NpzFrameSource(tmp_path, "training"), WindowSpec(3, 5, scene_state=True), ActionNormalizer())
    raw = d[40]["scene_obs"]  # scene D: red, blue, pink, as stored
    np.testing.assert_array_equal(raw, a.source.read({"scene_obs": (a.window(40)[1], a.window(40)[1] + 3)})["scene_obs"])
    moved = a[40]["scene_obs"]
    np.testing.assert_array_equal(moved[:, :6], raw[:, :6])  # the articulations stay
    np.testing.assert_array_equal(moved[:, 6:12], raw[:, 18:24])  # red: A's third block
    np.testing.assert_array_equal(moved[:, 12:18], raw[:, 12:18])  # blue
    np.testing.assert_array_equal(moved[:, 18:24], raw[:, 6:12])  # pink: A's first block
    np.save(tmp_path / "training" / "scene_info.npy", {"calvin_scene_A": [first, first + 10]})
    with pytest.raises(ValueError, match=r"scene_info .* places no scene at frame \d+ \(annotation \d+"):
        WindowDataset(NpzFrameSource(tmp_path, "training"), WindowSpec(3, 5, scene_state=True), ActionNormalizer())
    WindowDataset(NpzFrameSource(tmp_path, "training"), WindowSpec(3, 5), ActionNormalizer())  # no targets: no need


def test_window_longer_than_segments_is_an_error(calvin_root):
    src = NpzFrameSource(calvin_root, "training")
    with pytest.raises(ValueError, match=r"window_size=13 is longer than 1 of 4 .*turn_on_led.*12 frames"):
        WindowDataset(src, WindowSpec(13, 10), ActionNormalizer())
    ds = WindowDataset(src, WindowSpec(13, 10), ActionNormalizer(), WindowOptions(drop_short_segments=True))
    assert "turn_on_led" not in ds.lang.task
    with pytest.raises(ValueError, match="window_size must be an integer >= 1"):
        WindowSpec(0, 10)
    with pytest.raises(ValueError, match="window_size and chunk_size must be >= 1"):
        VLAConfig(window_size=-1)


def test_exclude_tasks_and_n_shot(calvin_root):
    src = NpzFrameSource(calvin_root, "training")
    ds = WindowDataset(src, WindowSpec(4, 10), ActionNormalizer(), WindowOptions(exclude_tasks=("open_drawer",)))
    assert sorted(ds.lang.task) == ["lift_red_block_table", "turn_on_led"]
    with pytest.raises(ValueError, match="exclude_tasks.*open_drawr"):
        WindowDataset(src, WindowSpec(4, 10), ActionNormalizer(), WindowOptions(exclude_tasks=("open_drawr",)))
    picks = {tuple(WindowDataset(src, WindowSpec(4, 10), ActionNormalizer(), WindowOptions(n_shot=1, n_shot_seed=s)).segments) for s in range(8)}
    for p in picks:  # one segment per task, and the drawer segment chosen depends on the seed
        assert len(p) == 3 and 1 in p and 2 in p
    assert picks == {(0, 1, 2), (1, 2, 3)}
    again = WindowDataset(src, WindowSpec(4, 10), ActionNormalizer(), WindowOptions(n_shot=1, n_shot_seed=5)).segments
    np.testing.assert_array_equal(again, WindowDataset(src, WindowSpec(4, 10), ActionNormalizer(), WindowOptions(n_shot=1, n_shot_seed=5)).segments)


def test_build_dataset_from_config(calvin_root):
    """The windows' shape comes from the model's config, how they are drawn from the data config."""
    cfg = DataConfig(path=str(calvin_root), exclude_tasks=("open_drawer",), n_shot=1)
    spec = VLAConfig(window_size=4, chunk_size=2).window_spec()
    train, val = build_dataset(cfg, spec, train=True), build_dataset(cfg, spec, train=False)
    assert train.options.augment and not val.options.augment and train.spec == val.spec == WindowSpec(4, 2)
    assert train[0]["actions"].shape == (4, 2, 7) and "robot_obs" in train[0]
    assert "open_drawer" not in train.lang.task and val.lang.task == ["turn_on_led"]
    assert val.window(0) == (0, 553570)
    # a split folder as data.path trains, but its "validation" would be the same frames: refused, saying so
    split_folder = DataConfig(path=str(calvin_root / "training"))
    assert len(build_dataset(split_folder, spec, train=True)) > 0
    with pytest.raises(ValueError, match=r"is a split folder, not a dataset root .* validation would read the training frames"):
        build_dataset(split_folder, spec, train=False)
    with pytest.raises(ValueError, match=r"data: unknown keys \['windowsize'\]"):
        DataConfig.from_dict({"path": "x", "windowsize": 3})
    with pytest.raises(ValueError, match="data.n_shot must be an integer, got 'one'"):
        DataConfig.from_dict({"path": "x", "n_shot": "one"})


def test_start_repeats_draw_each_segments_first_window_again(calvin_root):
    """`start_repeats=r`: every segment's windows once, then r more draws of its first window (the frames
    where only the instruction tells the task); validation draws every window once."""
    W, r = 8, 3
    src = NpzFrameSource(calvin_root, "training")
    plain = WindowDataset(src, WindowSpec(W, 10), ActionNormalizer())
    ds = WindowDataset(src, WindowSpec(W, 10), ActionNormalizer(), WindowOptions(augment=False, start_repeats=r))
    assert len(ds) == len(plain) + r * len(ANNOTATIONS)
    starts = [ds.window(i) for i in range(len(ds))]
    for k, ((s, e), task, _) in enumerate(ANNOTATIONS):
        mine = [t0 for seg, t0 in starts if seg == k]
        assert mine == list(range(s, e - W + 2)) + [s] * r, task
    first = next(i for i, (seg, t0) in enumerate(starts) if seg == 1)
    repeat = next(i for i, (seg, t0) in enumerate(starts) if seg == 1 and i > first and t0 == starts[first][1])
    for key in ("actions", "action_mask", "rgb_static", "robot_obs"):
        np.testing.assert_array_equal(ds[repeat][key], ds[first][key])
    assert WindowOptions(start_repeats=r).for_validation().start_repeats == 0
    with pytest.raises(ValueError, match="start_repeats must be >= 0, got -1"):
        WindowOptions(start_repeats=-1)


def test_resample_instructions_draw_from_the_tasks_own_annotations(calvin_root):
    """`resample_instructions`: a training window's instruction is any annotation of its task among the
    training segments (both of open_drawer's, seeded by torch like the shift); a task with one phrasing keeps
    it; validation keeps each segment's own."""
    src = NpzFrameSource(calvin_root, "training")
    ds = WindowDataset(src, WindowSpec(8, 10), ActionNormalizer(), WindowOptions(augment=False, resample_instructions=True))
    phrasings = {task: {ann for (_, t, ann) in ANNOTATIONS if t == task} for (_, task, _) in ANNOTATIONS}
    assert len(phrasings["open_drawer"]) == 2
    torch.manual_seed(0)
    seen: dict[str, set[str]] = {}
    for i in range(len(ds)):
        item = ds[i]
        seen.setdefault(item["task"], set()).add(item["instruction"])
    assert seen == phrasings
    first_segment = [i for i in range(len(ds)) if ds.window(i)[0] == 0]
    torch.manual_seed(1)
    drawn = [ds[i]["instruction"] for i in first_segment]
    torch.manual_seed(1)
    assert [ds[i]["instruction"] for i in first_segment] == drawn
    plain = WindowDataset(src, WindowSpec(8, 10), ActionNormalizer(), WindowOptions(augment=False))
    assert [plain[i]["instruction"] for i in first_segment] == [ANNOTATIONS[0][2]] * len(first_segment)
    assert WindowOptions(resample_instructions=True).for_validation().resample_instructions is False
    assert DataConfig.from_dict({"path": "x", "resample_instructions": True}).resample_instructions


def test_instruction_word_dropout_leaves_words_out_in_order(calvin_root):
    """`instruction_word_dropout=p`: a training window's instruction keeps each word with probability 1 - p,
    in order, at least one; validation keeps every word; p outside [0, 1) is an error."""
    src = NpzFrameSource(calvin_root, "training")
    ds = WindowDataset(src, WindowSpec(8, 10), ActionNormalizer(), WindowOptions(augment=False, instruction_word_dropout=0.5))
    words = ANNOTATIONS[0][2].split()
    torch.manual_seed(0)
    drawn = [ds.instruction(0).split() for _ in range(400)]

    def subsequence(d: list[str]) -> bool:
        rest = iter(words)
        return all(w in rest for w in d)

    assert all(d and subsequence(d) for d in drawn)
    kept = np.mean([len(d) for d in drawn]) / len(words)
    assert 0.45 < kept < 0.6, kept  # ~0.5, a little more for the one word always kept
    assert len({" ".join(d) for d in drawn}) > 20
    assert WindowOptions(instruction_word_dropout=0.5).for_validation().instruction_word_dropout == 0.0
    with pytest.raises(ValueError, match=r"instruction_word_dropout must be in \[0, 1\), got 1.0"):
        WindowOptions(instruction_word_dropout=1.0)

