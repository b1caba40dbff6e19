"""The CALVIN-layout writer: round trip, worker processes, atomic frames, crash and resume."""

from __future__ import annotations

import multiprocessing as mp
import os

import numpy as np
import pytest
import yaml

import harness.data.calvin_writer as cw
from harness.data.calvin_format import CalvinFormatError, CalvinSplit
from harness.data.calvin_writer import CalvinDatasetWriter, EpisodeWriter, finalize_dataset
from harness.data.normalization import ActionNormalizer
from harness.data.windows import NpzFrameSource, WindowDataset, WindowSpec
from tests.calvin_layout import frame_arrays

KEYS = ("actions", "rel_actions", "robot_obs", "scene_obs", "rgb_static", "rgb_gripper", "depth_static", "depth_gripper")


def frame(fid: int) -> dict[str, np.ndarray]:
    return {k: v for k, v in frame_arrays(fid).items() if k in KEYS}


def write_episode(ep_writer, seeds, annotations):
    for s in seeds:
        ep_writer.add_frame(**frame(s))
    for a in annotations:
        ep_writer.add_annotation(*a)


def test_round_trip_every_key(tmp_path):
    with CalvinDatasetWriter(tmp_path, "training", first_frame_id=1000) as w:
        w.begin_episode("calvin_scene_D")
        write_episode(w, range(10), [(0, 5, "open the drawer", "open_drawer"), (4, 9, "lift it", "lift_red_block_table")])
        assert w.end_episode() == (1000, 1009)
        w.begin_episode("calvin_scene_D")
        write_episode(w, range(10, 22), [(2, 11, "push the button", "turn_on_led")])
        assert w.end_episode() == (1010, 1021)
    stats = finalize_dataset(tmp_path)

    split = CalvinSplit(tmp_path, "training")
    assert split.episodes.tolist() == [[1000, 1009], [1010, 1021]]
    assert np.load(split.path / "ep_lens.npy").tolist() == [10, 12]
    assert split.scene_info() == {"calvin_scene_D": [1000, 1021]}
    for i, fid in enumerate(range(1000, 1022)):
        got = split.load_frame(fid)
        want = frame(i)
        for k in KEYS:
            assert got[k].dtype == (np.uint8 if k.startswith("rgb") else np.float32), k
            np.testing.assert_array_equal(got[k], want[k].astype(got[k].dtype), err_msg=k)
    lang = split.lang
    assert lang.indx.tolist() == [[1000, 1005], [1004, 1009], [1012, 1021]]
    assert lang.task == ["open_drawer", "lift_red_block_table", "turn_on_led"] and lang.emb is None
    assert lang.episodes == [0, 0, 1]
    # the raw file is CALVIN's pickled dict, with CALVIN's keys
    raw = np.load(split.path / "lang_annotations" / "auto_lang_ann.npy", allow_pickle=True).item()
    assert set(raw) == {"info", "language"} and set(raw["language"]) == {"ann", "task"}
    # statistics.yaml: CALVIN's layout, means of the frames written
    on_disk = yaml.safe_load((split.path / "statistics.yaml").read_text())
    assert on_disk["robot_obs"][0]["_target_"] == "calvin_agent.utils.transforms.NormalizeVector"
    robot = np.stack([frame(i)["robot_obs"] for i in range(22)]).astype(np.float32).astype(np.float64)
    np.testing.assert_allclose(on_disk["robot_obs"][0]["mean"], robot.mean(0), atol=1e-5)
    np.testing.assert_allclose(stats["rel_actions"]["std"], np.stack([frame(i)["rel_actions"] for i in range(22)]).std(0), atol=1e-5)
    # and the windows of what was recorded check out against the recorded actions
    ds = WindowDataset(NpzFrameSource(split), WindowSpec(4, 3), ActionNormalizer())
    assert len(ds) == 3 + 3 + 7
    k, t0 = ds.window(6)
    assert (k, t0) == (2, 1012)
    item = ds[6]
    want = ActionNormalizer().normalize(np.stack([frame(t0 - 1000 + j)["rel_actions"] for j in range(3)]))
    np.testing.assert_allclose(item["actions"][0], want, atol=1e-6)
    assert item["instruction"] == "push the button"


def test_language_embeddings(tmp_path):
    with CalvinDatasetWriter(tmp_path, "validation") as w:
        w.begin_episode("calvin_scene_D")
        write_episode(w, range(3), [(0, 2, "open the drawer", "open_drawer", np.arange(384, dtype=np.float32))])
        w.end_episode()
        w.begin_episode("calvin_scene_D")
        write_episode(w, range(3), [(0, 1, "close the drawer", "close_drawer")])
        with pytest.raises(ValueError, match="every annotation has an embedding"):
            w.end_episode()
        # another size: refused before its frames move, and the writer goes on with the split's size
        w.begin_episode("calvin_scene_D")
        write_episode(w, range(3), [(0, 1, "close the drawer", "close_drawer", np.zeros(512, dtype=np.float32))])
        with pytest.raises(ValueError, match=r"language embeddings of \[384, 512\] values"):
            w.end_episode()
        w.begin_episode("calvin_scene_D")
        write_episode(w, range(3), [(0, 1, "close the drawer", "close_drawer", np.ones(384, dtype=np.float32))])
        assert w.end_episode() == (3, 5)
    lang = CalvinSplit(tmp_path, "validation").lang
    assert lang.emb.shape == (2, 1, 384) and lang.emb[0, 0, 5] == 5.0 and lang.emb[1, 0, 5] == 1.0
    assert sorted(p.name for p in (tmp_path / "validation").glob("episode_*.npz")) == [
        f"episode_{i:07d}.npz" for i in range(6)]


def _worker(staging: str, seed: int, conn) -> None:
    ep = EpisodeWriter(staging, "calvin_scene_A")
    write_episode(ep, range(seed, seed + 5), [(1, 3, f"task {seed}", "rotate_red_block_left")])
    conn.send(ep.finish())


def _crashing_worker(staging: str) -> None:
    ep = EpisodeWriter(staging, "calvin_scene_A")
    write_episode(ep, range(4), [])
    os._exit(3)  # killed mid-episode: no finish, no commit


def test_worker_processes_write_episodes_and_parent_commits(tmp_path):
    ctx = mp.get_context("fork")
    w = CalvinDatasetWriter(tmp_path, "training")
    records = []
    for seed in (0, 100):
        parent, child = ctx.Pipe()
        p = ctx.Process(target=_worker, args=(str(w.staging_dir), seed, child))
        p.start()
        records.append(parent.recv())
        p.join()
    assert [w.commit(r) for r in records] == [(0, 4), (5, 9)]
    w.close()
    split = CalvinSplit(tmp_path, "training")
    assert split.lang.indx.tolist() == [[1, 3], [6, 8]] and split.lang.ann == ["task 0", "task 100"]
    np.testing.assert_array_equal(split.load_frame(7)["rgb_static"], frame(102)["rgb_static"])


def test_crash_mid_episode_leaves_no_half_episode_and_resume_continues(tmp_path):
    w = CalvinDatasetWriter(tmp_path, "training", first_frame_id=50)
    w.begin_episode("calvin_scene_B")
    write_episode(w, range(6), [(0, 5, "slide the door", "move_slider_left")])
    w.end_episode()
    p = mp.get_context("fork").Process(target=_crashing_worker, args=(str(w.staging_dir),))
    p.start()
    p.join()
    assert p.exitcode == 3
    staged = list(w.staging_dir.rglob("*.npz"))
    assert len(staged) == 4  # the crashed episode's frames exist only in staging
    w.close()  # the owning process dies too; its lock goes with it

    # a commit cut short: frames renamed into place, metadata not yet written
    (tmp_path / "training" / "episode_0000056.npz").write_bytes(b"half")
    killed_write = tmp_path / "training" / f".ep_start_end_ids.npy.tmp-{p.pid}"  # its writer is gone
    killed_write.write_bytes(b"x")

    w = CalvinDatasetWriter(tmp_path, "training")
    assert not killed_write.exists()  # removed by the folder's lock (harness.folder_lock), not counted below
    assert w.resumed_from == {"episodes": 1, "frames": 6, "removed_files": 1}
    assert not w.staging_dir.exists() or not any(w.staging_dir.iterdir())
    names = sorted(f.name for f in (tmp_path / "training").glob("episode_*.npz"))
    assert names == [f"episode_{i:07d}.npz" for i in range(50, 56)]
    w.begin_episode("calvin_scene_B")
    write_episode(w, range(6, 9), [(0, 2, "again", "move_slider_right")])
    assert w.end_episode() == (56, 58)
    w.close()
    split = CalvinSplit(tmp_path, "training")
    assert split.episodes.tolist() == [[50, 55], [56, 58]]
    assert split.lang.indx.tolist() == [[50, 55], [56, 58]] and split.scene_info() == {"calvin_scene_B": [50, 58]}


def test_resume_drops_annotations_and_scene_ranges_of_an_uncommitted_episode(tmp_path):
    with CalvinDatasetWriter(tmp_path, "training") as w:
        w.begin_episode("calvin_scene_C")
        write_episode(w, range(4), [(0, 3, "a", "open_drawer")])
        w.end_episode()
        w.begin_episode("calvin_scene_C")
        write_episode(w, range(4), [(1, 2, "b", "close_drawer")])
        w.end_episode()
    split = tmp_path / "training"
    eps_after_first = np.asarray([[0, 3]], dtype=np.int64)
    np.save(split / "ep_start_end_ids.npy", eps_after_first)  # as if the crash came before the commit point
    with CalvinDatasetWriter(tmp_path, "training") as w:
        assert w.resumed_from["removed_files"] == 4
        assert [a.task for a in w.annotations] == ["open_drawer"] and w.scene_info == {"calvin_scene_C": [0, 3]}
    assert CalvinSplit(tmp_path, "training").lang.task == ["open_drawer"]


def test_frame_writes_are_atomic(tmp_path, monkeypatch):
    w = CalvinDatasetWriter(tmp_path, "training")
    ep = w.begin_episode("calvin_scene_D")
    ep.add_frame(**frame(0))

    def dies_half_way(f, **arrays):
        f.write(b"PK\x03\x04 partial")
        raise OSError("disk full")

    monkeypatch.setattr(cw.np, "savez_compressed", dies_half_way)
    with pytest.raises(OSError, match="disk full"):
        ep.add_frame(**frame(1))
    assert sorted(p.name for p in ep.dir.iterdir()) == ["0000000.npz"]  # no half frame, no temp file
    monkeypatch.undo()
    ep.add_frame(**frame(1))
    assert w.end_episode() == (0, 1)
    w.close()


def test_bad_frames_are_refused_naming_the_key(tmp_path):
    w = CalvinDatasetWriter(tmp_path, "training")
    w.begin_episode("calvin_scene_D")
    bad = frame(0)
    bad["rel_actions"] = bad["rel_actions"].copy()
    bad["rel_actions"][2] = np.nan
    with pytest.raises(CalvinFormatError, match=r"\[rel_actions\]: non-finite"):
        w.add_frame(**bad)
    missing = frame(0)
    del missing["depth_gripper"]
    with pytest.raises(CalvinFormatError, match=r"\[depth_gripper\]: missing key"):
        w.add_frame(**missing)
    wrong = frame(0)
    wrong["robot_obs"] = np.zeros(14)
    with pytest.raises(CalvinFormatError, match=r"\[robot_obs\]: expected shape \(15\)"):
        w.add_frame(**wrong)
    w.add_frame(**frame(0))
    with pytest.raises(ValueError, match="runs past the episode's 1 frames"):
        w.add_annotation(0, 3, "x", "open_drawer")
        w.end_episode()
    with pytest.raises(RuntimeError, match="being written by another process"):
        CalvinDatasetWriter(tmp_path, "training")
    w.close()


def test_a_scene_is_one_range(tmp_path):
    with CalvinDatasetWriter(tmp_path, "training") as w:
        for scene in ("calvin_scene_A", "calvin_scene_B"):
            w.begin_episode(scene)
            write_episode(w, range(2), [])
            w.end_episode()
        w.begin_episode("calvin_scene_A")
        write_episode(w, range(2), [])
        with pytest.raises(ValueError, match="commit a scene's episodes together"):
            w.end_episode()
        assert w.scene_info == {"calvin_scene_A": [0, 1], "calvin_scene_B": [2, 3]}
