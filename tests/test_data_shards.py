"""Memory-mapped shards give the same windows as the per-frame npz files, in workers and under DDP sampling."""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler

from harness.data.images import resize_frames
from harness.data.normalization import ActionNormalizer
from harness.data.shards import ShardFrameSource, convert, directory_size
from harness.data.windows import NpzFrameSource, WindowDataset, WindowOptions, WindowSpec, collate_windows
from tests.calvin_layout import write_dataset

torch.set_num_threads(1)
CFG = WindowSpec(4, 6, cameras=("static", "gripper"))


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    root = write_dataset(tmp_path_factory.mktemp("calvin"))
    dst = tmp_path_factory.mktemp("shards") / "out"
    results = convert(root, dst, shard_frames=16, progress=False)  # small shards: windows straddle them
    return root, dst, results


def assert_items_equal(a, b):
    assert set(a) == set(b)
    for k in a:
        if isinstance(a[k], str):
            assert a[k] == b[k], k
        else:
            assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
            np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_converted_layout(both):
    root, dst, results = both
    assert [r["split"] for r in results] == ["training", "validation"]
    m = json.loads((dst / "training" / "manifest.json").read_text())
    assert m["num_frames"] == 100 and len(m["shards"]) == 7
    assert m["runs"] == [[358482, 358541, 0], [358600, 358639, 60]]
    assert m["keys"]["rgb_static"] == {"dtype": "uint8", "shape": [200, 200, 3]}
    assert m["keys"]["rel_actions"] == {"dtype": "float32", "shape": [7]}
    a = np.load(dst / "training" / "shard_00000" / "rgb_static.npy", mmap_mode="r")
    assert a.shape == (16, 200, 200, 3) and a.flags["C_CONTIGUOUS"]
    assert directory_size(dst / "training") > 100 * (200 * 200 * 3 + 84 * 84 * 3)
    with pytest.raises(FileExistsError):
        convert(root, dst, progress=False)


@pytest.mark.parametrize("split", ["training", "validation"])
def test_shard_windows_equal_npz_windows(both, split):
    root, dst, _ = both
    spec = replace(CFG, scene_state=True)  # scene_obs too, its blocks ordered by the split's scene_info
    npz = WindowDataset(NpzFrameSource(root, split), spec, ActionNormalizer())
    sh = WindowDataset(ShardFrameSource(dst, split), spec, ActionNormalizer())
    assert sh.source.scene_info == npz.source.scene_info == ({"calvin_scene_D": [358482, 358639]} if split == "training" else None)
    assert len(npz) == len(sh)
    for i in range(len(npz)):
        assert_items_equal(npz[i], sh[i])
        # items own their arrays, whatever the source (the shards' are memory maps)
        assert all(v.flags.writeable for v in sh[i].values() if isinstance(v, np.ndarray))
    aug = WindowOptions(augment=True)
    a, b = (WindowDataset(NpzFrameSource(root, split), CFG, ActionNormalizer(), aug),
            WindowDataset(ShardFrameSource(dst, split), CFG, ActionNormalizer(), aug))
    torch.manual_seed(0)
    first = [a[i] for i in range(0, len(a), 7)]
    torch.manual_seed(0)
    second = [b[i] for i in range(0, len(b), 7)]
    for x, y in zip(first, second):
        assert_items_equal(x, y)


def test_annotated_only_is_smaller_and_equal(both, tmp_path):
    root, dst, _ = both
    small = convert(root / "training", tmp_path / "ann", frames="annotated", progress=False)[0]
    assert small["frames"] == (358541 - 358482 + 1) + (358611 - 358600 + 1) + (358639 - 358620 + 1)
    assert small["bytes"] < directory_size(dst / "training")
    npz = WindowDataset(NpzFrameSource(root, "training"), CFG, ActionNormalizer())
    sh = WindowDataset(ShardFrameSource(tmp_path / "ann"), CFG, ActionNormalizer())
    for i in range(0, len(npz), 5):
        assert_items_equal(npz[i], sh[i])


def test_dataloader_workers_and_distributed_sampler(both):
    root, dst, _ = both
    sh = WindowDataset(ShardFrameSource(dst, "training"), CFG, ActionNormalizer())
    sh[0]  # maps opened in this process must not travel to the workers
    assert sh.source._maps and pickle.loads(pickle.dumps(sh)).source._maps == {}
    npz = WindowDataset(NpzFrameSource(root, "training"), CFG, ActionNormalizer())
    seen = []
    for rank in (0, 1):
        sampler = DistributedSampler(sh, num_replicas=2, rank=rank, shuffle=True, seed=1)
        order = list(iter(sampler))
        loader = DataLoader(sh, batch_size=8, sampler=sampler, num_workers=2, collate_fn=collate_windows,
                            multiprocessing_context="spawn", persistent_workers=False)
        batches = list(loader)
        got = {k: torch.cat([b[k] for b in batches]) for k in ("rgb_static", "rgb_gripper", "actions", "action_mask", "robot_obs")}
        got_tasks = [t for b in batches for t in b["task"]]
        assert len(got_tasks) == len(order)
        for row in range(0, len(order), 5):
            want = npz[order[row]]
            for k in got:
                np.testing.assert_array_equal(got[k][row].numpy(), want[k], err_msg=k)
            assert got_tasks[row] == want["task"]
        seen += order
    assert sorted(set(seen)) == list(range(len(sh)))  # the two replicas cover every window


def test_resized_shards_store_what_the_processor_would_make(both, tmp_path):
    """Images stored at a smaller size equal resize_frames of the full frames; the rest is unchanged."""
    root, _, _ = both
    out = tmp_path / "small"
    convert(root / "training", out, resize={"rgb_static": 48, "rgb_gripper": 32}, resize_mode="bicubic", progress=False)
    m = json.loads((out / "manifest.json").read_text())
    assert m["keys"]["rgb_static"]["shape"] == [48, 48, 3] and m["keys"]["rgb_gripper"]["shape"] == [32, 32, 3]
    assert m["resized"] == {"rgb_static": {"from": [200, 200, 3], "mode": "bicubic"},
                            "rgb_gripper": {"from": [84, 84, 3], "mode": "bicubic"}}
    npz = WindowDataset(NpzFrameSource(root, "training"), CFG, ActionNormalizer())
    sh = WindowDataset(ShardFrameSource(out), CFG, ActionNormalizer())
    for i in range(0, len(npz), 9):
        full, small = npz[i], sh[i]
        for key, edge in (("rgb_static", 48), ("rgb_gripper", 32)):
            want = resize_frames(torch.from_numpy(full[key]).permute(0, 3, 1, 2), (edge, edge), "bicubic")
            np.testing.assert_array_equal(small[key], want.permute(0, 2, 3, 1).numpy(), err_msg=key)
        for key in ("actions", "action_mask", "robot_obs"):
            np.testing.assert_array_equal(small[key], full[key], err_msg=key)


@pytest.mark.parametrize("resize, mode, message", [
    ({"robot_obs": 48}, "bicubic", "'robot_obs' is not an image key"),
    ({"rgb_static": 0}, "bicubic", "must be a positive integer"),
    ({"rgb_static": 48}, "lanczos", "resize_mode must be one of"),
])
def test_bad_resize_is_refused_before_any_work(both, tmp_path, resize, mode, message):
    root, _, _ = both
    with pytest.raises(ValueError, match=message):
        convert(root / "training", tmp_path / "bad", resize=resize, resize_mode=mode, progress=False)
    assert not (tmp_path / "bad").exists()


def test_resize_needs_a_converted_key(both, tmp_path):
    root, _, _ = both
    with pytest.raises(ValueError, match="'rgb_gripper' is not among the converted keys"):
        convert(root / "training", tmp_path / "bad", keys=("rgb_static", "rel_actions"), resize={"rgb_gripper": 32},
                progress=False)


def test_a_split_folder_converted_under_both_split_names_is_refused(both, tmp_path):
    """A split folder stands for any split name: converted as training and validation, both would hold its frames
    (the validation loss measured on training frames)."""
    root, _, _ = both
    with pytest.raises(ValueError, match=r"no 'training' or 'validation' folder: it is a split folder .* give the dataset root"):
        convert(root / "training", tmp_path / "both", splits=["training", "validation"], progress=False)
    assert not (tmp_path / "both").exists()
    [one] = convert(root / "training", tmp_path / "one", splits=["training"], progress=False)
    assert one["split"] == "training" and (tmp_path / "one" / "training" / "manifest.json").is_file()


def test_a_resumed_conversion_keeps_the_converted_split_and_converts_the_rest(both, tmp_path, capsys):
    """A conversion stopped after its first split carries on from the second: the finished split is not
    written again, and what a killed conversion left before its rename is removed."""
    from harness.data.__main__ import main

    root, full, _ = both
    dst = tmp_path / "out"
    convert(root, dst, splits=["training"], shard_frames=16, progress=False)
    before = (dst / "training" / "manifest.json").stat()
    killed = dst / ".validation.partial-4194305"
    (killed / "shard_00000").mkdir(parents=True)
    (killed / "shard_00000" / "rgb_static.npy").write_bytes(b"half a shard")
    with pytest.raises(FileExistsError, match=r"exists; remove it, choose another destination, or resume \(--resume\)"):
        convert(root, dst, progress=False)

    assert main(["convert", str(root), str(dst), "--resume", "--shard-frames", "16"]) == 0
    out = capsys.readouterr().out
    assert "training: 100 frames in 7 shards" in out and "(kept: converted before)" in out.splitlines()[0]
    assert "kept" not in out.splitlines()[1]
    after = (dst / "training" / "manifest.json").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert not killed.exists() and sorted(p.name for p in dst.iterdir()) == ["training", "validation"]
    for split in ("training", "validation"):
        a = WindowDataset(ShardFrameSource(dst, split), CFG, ActionNormalizer())
        b = WindowDataset(ShardFrameSource(full, split), CFG, ActionNormalizer())
        assert len(a) == len(b)
        for i in range(0, len(a), 7):
            assert_items_equal(a[i], b[i])


def test_a_resumed_conversion_refuses_a_split_converted_otherwise(both, tmp_path, capsys):
    from harness.data.__main__ import main

    root, _, _ = both
    dst = tmp_path / "out"
    convert(root, dst, splits=["training"], resize={"rgb_static": 48}, progress=False)
    with pytest.raises(ValueError, match=r"out/training was converted otherwise; remove it to convert it again: "
                                         r"keys: .*'shape': \[48, 48, 3\].* there, .*'shape': \[32, 32, 3\].* now; "
                                         r"resized: .*'mode': 'bicubic'.* there, .*'mode': 'bilinear'.* now"):
        convert(root, dst, resize={"rgb_static": 32}, resize_mode="bilinear", resume=True, progress=False)
    with pytest.raises(ValueError, match=r"frames: all there, annotated now; runs \(frame ids\)$"):
        convert(root, dst, frames="annotated", resize={"rgb_static": 48}, resume=True, progress=False)
    moved = tmp_path / "moved"
    shutil.copytree(root, moved)
    with pytest.raises(ValueError, match=r"source: .*/training there, .*/moved/training now$"):
        convert(moved, dst, resize={"rgb_static": 48}, resume=True, progress=False)
    assert not (dst / "validation").exists()  # refused before anything was written

    # the same frames annotated again with other instructions: what training reads differs
    lang_file = moved / "training" / "lang_annotations" / "auto_lang_ann.npy"
    lang = np.load(lang_file, allow_pickle=True).item()
    lang["language"]["ann"] = [a + "!" for a in lang["language"]["ann"]]
    np.save(lang_file, lang, allow_pickle=True)
    again = tmp_path / "again"
    convert(moved, again, splits=["training"], progress=False)
    lang["language"]["ann"] = [a[:-1] for a in lang["language"]["ann"]]
    np.save(lang_file, lang, allow_pickle=True)
    with pytest.raises(ValueError, match=r"converted otherwise; remove it to convert it again: annotations$"):
        convert(moved, again, resume=True, progress=False)

    (tmp_path / "mine" / "training").mkdir(parents=True)
    assert main(["convert", str(root), str(tmp_path / "mine"), "--resume"]) == 1
    assert "convert: " in capsys.readouterr().err
    with pytest.raises(FileExistsError, match=r"mine/training exists and is not a converted split \(no manifest.json\)"):
        convert(root, tmp_path / "mine", resume=True, progress=False)


def test_a_resumed_conversion_takes_the_source_by_any_path_and_leaves_a_running_conversion_alone(both, tmp_path,
                                                                                                   monkeypatch):
    root, _, _ = both
    dst = tmp_path / "out"
    monkeypatch.chdir(root.parent)
    convert(root.name, dst, splits=["training"], progress=False)  # a relative path, here
    monkeypatch.chdir(tmp_path)
    running = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = dst / f".validation.partial-{running.pid}"
        live.mkdir()
        results = convert(root, dst, resume=True, progress=False)  # the absolute path, from elsewhere
        assert [r.get("kept", False) for r in results] == [True, False]
        assert live.is_dir()  # another conversion's, still writing
    finally:
        running.kill()
        running.wait()


def test_bad_shard_sizes_are_refused_and_numpy_episode_ids_convert(both, tmp_path, capsys):
    """--shard-frames 0 or less is refused before anything is written (a negative one made a split of no shards
    that --resume then kept); an auto_lang_ann whose info.episodes is a numpy array converts (its int64 values
    stopped the conversion at its very end, in annotations.json)."""
    from harness.data.__main__ import main
    from harness.data.calvin_format import CalvinFormatError, LangAnnotations

    root, _, _ = both
    with pytest.raises(ValueError, match="shard_frames must be at least 1, got 0"):
        convert(root / "training", tmp_path / "zero", shard_frames=0, progress=False)
    with pytest.raises(SystemExit) as refused:
        main(["convert", str(root), str(tmp_path / "neg"), "--shard-frames", "-5"])
    assert refused.value.code == 2 and "-5" in capsys.readouterr().err and not (tmp_path / "neg").exists()
    lang = LangAnnotations.from_dict({"info": {"indx": [(0, 3)], "episodes": np.array([7])},
                                      "language": {"ann": ["open the drawer"], "task": ["open_drawer"]}}, "here")
    assert json.dumps(lang.to_dict()["info"]["episodes"]) == "[7]"
    # a 2-d array (episode ranges), numpy values inside lists: plain JSON; an empty `emb` (CALVIN's annotator's
    # start value) is no embeddings
    ranges = {"info": {"indx": [(0, 3)], "episodes": np.array([[100, 139], [200, 229]])},
              "language": {"ann": ["open the drawer"], "task": ["open_drawer"], "emb": []}}
    lang = LangAnnotations.from_dict(ranges, "here")
    assert json.dumps(lang.to_dict()["info"]["episodes"]) == "[[100, 139], [200, 229]]" and lang.emb is None
    with pytest.raises(CalvinFormatError, match="info.episodes.*cannot be written as JSON"):
        LangAnnotations.from_dict({**ranges, "info": {"indx": [(0, 3)], "episodes": [{1, 2}]}}, "here")


def test_a_resume_names_a_damaged_file_of_the_converted_split(both, tmp_path, capsys):
    from harness.data.__main__ import main

    root, _, _ = both
    dst = tmp_path / "out"
    convert(root, dst, splits=["training"], shard_frames=16, progress=False)
    (dst / "training" / "annotations.json").write_text('{"indx": [[0, 3')
    assert main(["convert", str(root), str(dst), "--split", "training", "--resume", "--shard-frames", "16"]) == 1
    err = capsys.readouterr().err
    assert f"convert: {dst / 'training' / 'annotations.json'} cannot be read" in err and "to convert it again" in err
