"""Bad input is named with file and key, by the reader and by `python -m harness.data check` (which reports all)."""

from __future__ import annotations

import re
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from harness.data.__main__ import main
from harness.data.calvin_format import CalvinFormatError, CalvinSplit
from harness.data.check import check_path
from harness.data.normalization import ActionNormalizer
from harness.data.shards import convert
from harness.data.sync import check_sync
from harness.data.windows import NpzFrameSource, WindowDataset, WindowSpec
from tests.calvin_layout import ANNOTATIONS, frame_arrays, lang_dict, write_dataset

REPO = Path(__file__).resolve().parents[1]


def rewrite(split: Path, fid: int, **changes) -> Path:
    arrays = frame_arrays(fid)
    for k, v in changes.items():
        if v is None:
            del arrays[k]
        else:
            arrays[k] = v
    path = split / f"episode_{fid:07d}.npz"
    np.savez_compressed(path, **arrays)
    return path


@pytest.fixture(scope="module")
def bad_root(tmp_path_factory):
    root = write_dataset(tmp_path_factory.mktemp("bad"))
    split = root / "training"
    (split / "episode_0358490.npz").unlink()  # a missing frame
    rewrite(split, 358500, robot_obs=None)  # a missing key
    rewrite(split, 358501, rel_actions=np.zeros(6))  # a wrong shape
    nan = frame_arrays(358502)["actions"].copy()
    nan[1] = np.nan
    rewrite(split, 358502, actions=nan)  # a non-finite action
    outside = (*ANNOTATIONS, ((358530, 358560), "push_pink_block_left", "push the pink block left"))  # runs into the gap
    np.save(split / "lang_annotations" / "auto_lang_ann.npy", lang_dict(outside))
    return root


def test_good_dataset_passes_with_a_summary(tmp_path, capsys):
    root = write_dataset(tmp_path / "good", with_emb=False)
    assert main(["check", str(root)]) == 0
    out = capsys.readouterr().out
    assert "frames: 100 in 2 episodes (100 frames' contents checked)" in out
    assert "frames: 30 in 1 episodes" in out  # validation
    assert "annotations: 4 over 3 tasks" in out
    assert "rel_actions" in out and "rgb_static    (200, 200, 3) x100" in out and "rgb_tactile" in out
    assert "problems: 0 errors" in out and "language.emb absent" in out
    reps = check_path(root, split="training")
    assert reps[0].annotations_per_task == {"open_drawer": 2, "lift_red_block_table": 1, "turn_on_led": 1}
    lo, hi = reps[0].action_ranges["rel_actions"]
    rel = np.stack([frame_arrays(f)["rel_actions"] for f in [*range(358482, 358542), *range(358600, 358640)]])
    np.testing.assert_allclose(lo, rel.min(0), atol=1e-6)
    np.testing.assert_allclose(hi, rel.max(0), atol=1e-6)


def test_check_command_reports_every_problem(bad_root):
    r = subprocess.run([sys.executable, "-m", "harness.data", "check", str(bad_root)], cwd=REPO,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1, r.stdout + r.stderr
    out = r.stdout
    assert "problems: 5 errors" in out, out
    assert "training/episode_0358490.npz: missing frame file" in out
    assert "training/episode_0358500.npz [robot_obs]: missing key" in out
    assert "training/episode_0358501.npz [rel_actions]: expected shape (7), got (6,)" in out
    assert "training/episode_0358502.npz [actions]: non-finite values" in out
    assert "auto_lang_ann.npy [info.indx]: entry 4 ('push_pink_block_left') covers frames [358530, 358560], outside" in out
    assert "problems: 0 errors" in out  # the validation split is fine


def test_reader_names_file_and_key(bad_root):
    split = CalvinSplit(bad_root, "training")
    cases = {
        358490: r"episode_0358490\.npz: missing frame file",
        358500: r"episode_0358500\.npz \[robot_obs\]: missing key",
        358501: r"episode_0358501\.npz \[rel_actions\]: expected shape \(7\)",
        358502: r"episode_0358502\.npz \[actions\]: non-finite",
    }
    for fid, pattern in cases.items():
        with pytest.raises(CalvinFormatError, match=pattern):
            split.load_frame(fid)
    with pytest.raises(ValueError, match=r"auto_lang_ann\.npy \[info\.indx\]: entry 4 .*\[358530, 358560\]"):
        WindowDataset(NpzFrameSource(split), WindowSpec(4, 10), ActionNormalizer())


def test_broken_metadata_is_reported(tmp_path):
    root = write_dataset(tmp_path / "d")
    split = root / "training"
    np.save(split / "ep_lens.npy", np.array([60, 41]))
    d = lang_dict()
    d["language"]["task"] = d["language"]["task"][:-1]
    np.save(split / "lang_annotations" / "auto_lang_ann.npy", d)
    rep = check_path(root, split="training")[0]
    text = rep.render()
    assert "ep_lens.npy: does not match ep_start_end_ids.npy" in text
    assert "auto_lang_ann.npy [language.task]: 3 entries but info.indx has 4" in text
    assert len(rep.errors) == 2
    (split / "ep_start_end_ids.npy").unlink()
    with pytest.raises(CalvinFormatError, match="ep_start_end_ids.npy: missing file"):
        CalvinSplit(split)


def test_check_shards(tmp_path):
    root = write_dataset(tmp_path / "d")
    convert(root, tmp_path / "s", progress=False, shard_frames=32)
    assert [r.errors for r in check_path(tmp_path / "s")] == [[], []]
    rel = np.load(tmp_path / "s" / "training" / "shard_00001" / "rel_actions.npy", mmap_mode="r+")
    rel[3, 0] = np.inf
    rel.flush()
    del rel
    np.save(tmp_path / "s" / "training" / "shard_00002" / "rgb_gripper.npy", np.zeros((5, 84, 84, 3), np.uint8))
    errors = check_path(tmp_path / "s", split="training")[0].errors
    assert [(Path(p.where).parent.name, p.key) for p in errors] == [("shard_00001", "rel_actions"), ("shard_00002", "rgb_gripper")]
    assert "first row 35" in errors[0].message


def corrupt_member(path: Path, key: str, stored: bool) -> None:
    """Rewrite a frame (stored or deflated) and flip one byte in the middle of `key`'s member data: the
    zip directory stays intact, only reading the member to its end (CRC-32, or inflate) finds it."""
    arrays = dict(np.load(path))
    (np.savez if stored else np.savez_compressed)(path, **arrays)
    with zipfile.ZipFile(path) as zf:
        info = zf.getinfo(f"{key}.npy")
    with open(path, "r+b") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = struct.unpack("<HH", f.read(4))
        pos = info.header_offset + 30 + name_len + extra_len + info.compress_size // 2
        f.seek(pos)
        byte = f.read(1)
        f.seek(pos)
        f.write(bytes([byte[0] ^ 0xFF]))


@pytest.mark.parametrize("stored", [True, False], ids=["stored", "deflated"])
def test_a_corrupt_image_member_is_found_and_named(tmp_path, capsys, stored):
    root = write_dataset(tmp_path / "d")
    frame = root / "training" / "episode_0358483.npz"
    corrupt_member(frame, "rgb_static", stored)
    assert main(["check", str(root)]) == 1
    out = capsys.readouterr().out
    assert f"ERROR: {frame} [rgb_static]: unreadable npz member" in out and "problems: 1 errors" in out, out
    if stored:  # the directory and the npy header are intact: only reading the pixels finds it
        assert main(["check", str(root), "--quick"]) == 0
        assert "quick: images and depth checked by their headers only" in capsys.readouterr().out
    split = CalvinSplit(root, "training")
    with pytest.raises(CalvinFormatError, match=rf"{frame} \[rgb_static\]: unreadable npz member"):
        split.load_frame(358483)
    windows = WindowDataset(NpzFrameSource(split), WindowSpec(4, 10), ActionNormalizer())
    assert windows.window(0) == (0, 358482)
    with pytest.raises(CalvinFormatError, match=rf"{frame} \[rgb_static\]: unreadable npz member"):
        windows[0]  # the training loader's error names the frame file and key too


def test_a_member_whose_header_declares_an_absurd_shape_is_named(tmp_path):
    """numpy allocates the declared shape before reading: 10**13 floats is a MemoryError, named like any damage."""
    import io
    import zipfile

    root = write_dataset(tmp_path / "d")
    frame = root / "training" / "episode_0358483.npz"
    with zipfile.ZipFile(frame) as zf:
        members = {name: zf.read(name) for name in zf.namelist()}
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f8", "fortran_order": False, "shape": (10**13,)})
    members["rel_actions.npy"] = header.getvalue() + bytes(56)
    with zipfile.ZipFile(frame, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    text = check_path(root, split="training")[0].render()
    assert f"{frame} [rel_actions]: unreadable npz member (MemoryError" in text, text
    windows = WindowDataset(NpzFrameSource(CalvinSplit(root, "training")), WindowSpec(4, 10), ActionNormalizer())
    with pytest.raises(CalvinFormatError, match=rf"{frame} \[rel_actions\]: unreadable npz member \(MemoryError"):
        windows[0]


def test_bad_episode_entries_do_not_stop_the_check(tmp_path):
    root = write_dataset(tmp_path / "d")
    split = root / "training"
    eps = np.array([[358482, 358541], [358700, 358650], [358600, 358639], [358630, 358645]], dtype=np.int64)
    np.save(split / "ep_start_end_ids.npy", eps)
    np.save(split / "ep_lens.npy", eps[:, 1] - eps[:, 0] + 1)
    rewrite(split, 358610, robot_obs=None)  # a problem inside a good episode
    for fid in range(358640, 358646):  # the overlapping episode's own frames exist
        rewrite(split, fid)
    text = check_path(root, split="training")[0].render()
    assert "ep_start_end_ids.npy: episode 1 starts after it ends: [358700, 358650]" in text, text
    assert "ep_start_end_ids.npy: episodes overlap: [358600, 358639] and [358630, 358645]" in text
    assert "episode_0358610.npz [robot_obs]: missing key" in text  # frames were still checked
    assert "frames: 106 in 4 episodes (106 frames' contents checked)" in text
    assert "annotations: 4 over 3 tasks" in text and "problems: 3 errors" in text
    with pytest.raises(CalvinFormatError, match=r"episode 1 starts after it ends.*\(and 1 more problems\)"):
        CalvinSplit(split)


def test_sample_must_be_positive(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["check", str(tmp_path), "--sample", "-1"])
    assert exit_info.value.code == 2 and "--sample: must be a number of frames >= 1, got -1" in capsys.readouterr().err
    with pytest.raises(ValueError, match="sample must be a number of frames >= 1"):
        check_path(tmp_path, sample=0)


@pytest.mark.parametrize("content,message", [
    ("rel_actions: {mean: [0, 0", "not valid YAML"),
    ("- just a list", "expected a mapping, got list"),
    ("rel_actions: {mean: [a, b, c, d, e, f], std: [1, 1, 1, 1, 1, 1]}", "must be lists of 6 numbers"),
    ("rel_actions: {mean: [0, 0, 0, 0, 0, 0]}", "must be lists of 6 numbers"),
])
def test_malformed_statistics_are_one_line_naming_the_file(tmp_path, content, message):
    from harness.data.config import DataConfig, make_normalizer

    stats = tmp_path / "training" / "statistics.yaml"
    stats.parent.mkdir()
    stats.write_text(content)
    with pytest.raises(ValueError) as err:  # the training command line prints a ValueError here in one line
        make_normalizer(DataConfig(path=str(tmp_path), normalizer={"mode": "zscore"}))
    assert str(stats) in str(err.value) and message in str(err.value) and "\n" not in str(err.value)


def test_zscore_statistics_come_from_a_split_folder_given_as_the_path(tmp_path):
    from harness.data.config import DataConfig, make_normalizer

    split = tmp_path / "calvin" / "training"  # a split folder (its frames' ids file) as data.path, for training
    split.mkdir(parents=True)
    (split / "ep_start_end_ids.npy").write_bytes(b"")
    (split / "statistics.yaml").write_text("rel_actions: {mean: [0.1, 0, 0, 0, 0, 0], std: [0.5, 1, 1, 1, 1, 1]}")
    normalizer = make_normalizer(DataConfig(path=str(split), normalizer={"mode": "zscore"}))
    assert normalizer.mean[0] == pytest.approx(0.1) and normalizer.std[0] == pytest.approx(0.5)


def test_an_old_task_D_D_copys_scene_info_is_refused_and_relabelled(tmp_path):
    """Copies of task_D_D from before CALVIN's fix of 16 September 2022 label the D training split calvin_scene_A:
    read as A, the scene-state targets would take A's block order. A folder named task_D_D says which scene it
    holds, so the label is refused, naming the command that relabels it (the original kept beside it)."""
    root, mine = write_dataset(tmp_path / "task_D_D"), write_dataset(tmp_path / "mine")
    (first, last), = CalvinSplit(root, "training").scene_info().values()
    for dataset in (root, mine):
        np.save(dataset / "training" / "scene_info.npy", {"calvin_scene_A": [first, last]})
    with pytest.raises(CalvinFormatError, match=r"holds scene D only.*fix-scene-info .*task_D_D --split training --scene D"):
        CalvinSplit(root, "training").scene_info()
    assert any("holds scene D only" in str(p) for r in check_path(root) for p in r.errors)
    assert any("holds scene D only" in str(p) for p in check_sync(root, "training").errors)  # a report, no crash
    assert CalvinSplit(mine, "training").scene_info() == {"calvin_scene_A": [first, last]}  # its name says nothing
    wrong = subprocess.run([sys.executable, "-m", "harness.data", "fix-scene-info", str(root), "--scene", "B"],
                           cwd=REPO, capture_output=True, text=True, timeout=120)
    assert wrong.returncode == 1 and "holds scene(s) D, not B" in wrong.stderr
    cmd = [sys.executable, "-m", "harness.data", "fix-scene-info", str(root), "--scene", "D"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "calvin_scene_A" in proc.stdout, proc.stderr[-2000:]
    assert CalvinSplit(root, "training").scene_info() == {"calvin_scene_D": [first, last]}
    kept = np.load(root / "training" / "scene_info.before_fix.npy", allow_pickle=True).item()
    assert kept == {"calvin_scene_A": [first, last]}
    proc = subprocess.run([*cmd[:4], str(root), "--split", "validation", "--scene", "D"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and "no scene_info.npy to relabel" in proc.stderr


# ---------------------------------------------------------------- malformed metadata: named, never a bare crash
def test_malformed_annotation_and_scene_metadata_is_named(tmp_path):
    root = write_dataset(tmp_path / "d")
    split = root / "training"
    lang = split / "lang_annotations" / "auto_lang_ann.npy"
    for change, where in ((lambda d: d["info"].__setitem__("indx", [(358482, 358500), (358495,)]), "[info.indx]"),
                          (lambda d: d["info"].__setitem__("episodes", 5), "[info.episodes]: expected a list, got int")):
        d = lang_dict()
        change(d)
        np.save(lang, d)
        assert any(where in str(p) for p in check_path(root, split="training")[0].errors)
        with pytest.raises(CalvinFormatError, match=re.escape(f"auto_lang_ann.npy {where}")):
            CalvinSplit(split).lang
    np.save(lang, lang_dict())
    np.save(split / "scene_info.npy", {"calvin_scene_D": 100})
    assert any("scene_info.npy: expected {scene name: [first, last]" in str(p) for p in check_path(root, split="training")[0].errors)
    with pytest.raises(CalvinFormatError, match="scene_info.npy: expected"):
        CalvinSplit(split).scene_info()
    (split / "statistics.yaml").write_bytes(b"\xff\xfe\x00\xd8 not text \x80\x81")
    assert any("statistics.yaml" in p.where for p in check_path(root, split="training")[0].errors)


def test_an_empty_annotation_list_reads_as_no_annotations(tmp_path):
    """What the writer saves for a recording whose committed episodes have no annotation yet (a chain whose first
    subtask failed): it reads back, so such a recording resumes."""
    from harness.data.calvin_format import LangAnnotations

    lang = LangAnnotations.from_dict(lang_dict(annotations=(), with_emb=False), "auto_lang_ann.npy")
    assert lang.indx.shape == (0, 2) and lang.indx.dtype == np.int64 and lang.ann == []


def test_an_error_from_a_worker_process_keeps_its_problems():
    import pickle

    from harness.data.calvin_format import Problem

    err = pickle.loads(pickle.dumps(CalvinFormatError([Problem("a.npz", "missing frame file"), Problem("b.npz", "x")])))
    assert str(err) == "a.npz: missing frame file (and 1 more problems)" and len(err.problems) == 2


def test_an_annotation_spanning_two_adjacent_episodes_is_a_warning(tmp_path):
    episodes = ((358482, 358501), (358502, 358521))  # contiguous ids: the annotation is inside the split's frames
    root = tmp_path / "d"
    from tests.calvin_layout import write_split

    write_split(root / "training", episodes=episodes + ((358600, 358609),),
                annotations=(((358490, 358510), "open_drawer", "open the drawer"),
                             ((358502, 358521), "turn_on_led", "turn on the led"),
                             ((358515, 358530), "close_drawer", "close the drawer")))  # into a gap: an error only
    rep = check_path(root, split="training")[0]
    assert [p.message for p in rep.errors] == [
        "entry 2 ('close_drawer') covers frames [358515, 358530], outside the split's frames"]
    assert [p.message for p in rep.problems if p.severity == "warning"] == [
        "1 entries span two episodes, first entry 0 ('open_drawer') over frames [358490, 358510]"]


def test_statistics_that_are_not_finite_are_refused_naming_the_file(tmp_path):
    from harness.data.config import DataConfig, make_normalizer

    stats = tmp_path / "training" / "statistics.yaml"
    stats.parent.mkdir()
    stats.write_text("rel_actions: {mean: [.nan, 0, 0, 0, 0, 0], std: [1, 1, 1, 1, 1, 1]}")
    with pytest.raises(ValueError, match="must be finite") as err:
        make_normalizer(DataConfig(path=str(tmp_path), normalizer={"mode": "zscore"}))
    assert str(stats) in str(err.value)
    with pytest.raises(ValueError, match="must be finite"):
        ActionNormalizer(mode="zscore", std=(float("inf"),) * 6)


@pytest.fixture()
def shards(tmp_path):
    convert(write_dataset(tmp_path / "d"), tmp_path / "s", progress=False, shard_frames=16)
    return tmp_path / "s" / "training"


def _edit_json(path: Path, edit) -> None:
    import json

    d = json.loads(path.read_text())
    edit(d)
    path.write_text(json.dumps(d))


@pytest.mark.parametrize("edit,message", [
    (lambda m: m["runs"][1].__setitem__(2, 0), "the runs' rows are not stored one after another"),  # would read run 0's rows
    (lambda m: m["runs"].reverse(), "runs are not sorted"),
    (lambda m: m["shards"][1]["rows"].__setitem__(0, 3), "the shards' rows do not tile"),
    (lambda m: m.pop("runs"), "missing runs"),
    (lambda m: m["shards"][0].pop("dir"), "runs, shards or num_frames malformed"),
])
def test_a_manifest_that_lies_about_its_layout_is_refused(shards, edit, message):
    from harness.data.shards import ShardFrameSource

    _edit_json(shards / "manifest.json", edit)
    with pytest.raises(CalvinFormatError, match=re.escape(f"manifest.json: {message}")):
        ShardFrameSource(shards)
    assert any(message in p.message for p in check_path(shards)[0].errors)


def test_corrupt_shard_files_are_named_when_training_reads_them(shards):
    from harness.data.shards import ShardFrameSource

    npy = shards / "shard_00000" / "rgb_static.npy"
    npy.write_bytes(npy.read_bytes()[:1000])
    with pytest.raises(CalvinFormatError, match=re.escape(f"{npy} [rgb_static]: cannot be mapped")):
        WindowDataset(ShardFrameSource(shards), WindowSpec(2, 3), ActionNormalizer())[0]
    _edit_json(shards / "annotations.json", lambda d: d.pop("task"))
    with pytest.raises(CalvinFormatError, match="annotations.json: missing task"):
        ShardFrameSource(shards).lang
    (shards / "annotations.json").write_text('{"indx": [[1, 2]')
    with pytest.raises(CalvinFormatError, match="annotations.json: cannot be read"):
        ShardFrameSource(shards).lang
    assert any("annotations.json: cannot be read" in str(p) for p in check_path(shards)[0].errors)


def test_conversion_errors_name_the_file_and_leave_nothing_behind(tmp_path):
    root = write_dataset(tmp_path / "task_D_D")
    bad = root / "training" / "episode_0358610.npz"
    bad.write_bytes(b"not a zip")
    with pytest.raises(CalvinFormatError, match=re.escape(f"{bad}: not a readable npz file")):
        convert(root, tmp_path / "s", splits=["training"], progress=False, shard_frames=16, workers=2)
    np.save(root / "training" / "scene_info.npy", {"calvin_scene_A": [358482, 358639]})  # an old task_D_D copy's
    with pytest.raises(CalvinFormatError, match="holds scene D only"):
        convert(root, tmp_path / "s2", splits=["training"], progress=False)
    assert not list((tmp_path / "s").iterdir()) and not list((tmp_path / "s2").iterdir())  # no shard, no partial folder
    from tests.calvin_layout import write_split

    write_split(tmp_path / "none" / "training", annotations=(), with_emb=False)
    with pytest.raises(ValueError, match="no frames to convert"):
        convert(tmp_path / "none", tmp_path / "s3", splits=["training"], frames="annotated", progress=False)


def test_sync_reports_a_corrupt_frame_and_checks_the_other_episodes(tmp_path):
    root = write_dataset(tmp_path / "d")
    clean = check_sync(root, "training")
    (root / "training" / "episode_0358620.npz").write_bytes(b"not a zip")
    report = check_sync(root, "training")
    assert str(root / "training" / "episode_0358620.npz") in [p.where for p in report.errors]
    assert [a.episode for a in report.actions] == [a.episode for a in clean.actions][:1]  # the first episode's measured


def test_sync_reports_a_light_that_is_neither_on_nor_off(tmp_path):
    """A frame whose lightbulb or led is not 0 or 1 stopped the whole check with the env's error (no file named):
    the env cannot restore it. Now its episode is reported at that frame, and the others are checked."""
    root = write_dataset(tmp_path / "d")
    path = root / "training" / "episode_0358610.npz"
    frame = dict(np.load(path))
    frame["scene_obs"][5] = 0.7
    np.savez_compressed(path, **frame)
    report = check_sync(root, "training")
    bad = [p for p in report.errors if "frame 358610" in p.where]
    assert len(bad) == 1 and "a light is 0 or 1" in bad[0].message and re.search(r"are [01], 0\.7:", bad[0].message)
    assert [a.episode for a in report.actions] == [0]  # the first episode is still measured
