"""The synchronisation check (harness/data/sync.py): the project's own recordings are in sync; copies
with actions one frame off, swapped task labels, misplaced annotation windows or the other gripper sign
are not."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from harness.data.__main__ import main as data_main
from harness.data.calvin_format import CalvinSplit, load_pickled_npy
from harness.data.sync import RecordedStates, check_sync, open_frames, read_stretch, stretch_bounds, sync_report
from tests.dataset_copies import flip_gripper, shift_actions, swap_labels


def _rewrite_annotations(split_dir, edit) -> None:
    path = CalvinSplit(split_dir).lang_path
    d = load_pickled_npy(path)
    d["info"]["indx"] = [tuple(int(v) for v in row) for row in edit(np.asarray(d["info"]["indx"]))]
    np.save(path, d, allow_pickle=True)


@pytest.mark.parametrize("split", ["training", "validation"])
def test_the_projects_recording_is_in_sync(recording, split):
    report = check_sync(recording, split)
    assert report.problems == []
    assert report.lags() == {0: len(report.actions)} and len(report.actions) == (2 if split == "training" else 1)
    assert all(a.profile[0] > 0.6 and a.profile[0] > a.profile[1] + 0.2 for a in report.actions)
    assert all(a.gripper_echo in (None, 1.0) and a.reversed_axes == () for a in report.actions)
    assert report.gripper.opened == report.gripper.to_open > 0 and not report.gripper.flipped
    assert len(report.annotations) == (4 if split == "training" else 2)
    assert all(a.status in ("completed", "completed (simulated end)") for a in report.annotations)
    assert "0 errors, 0 warnings" in report.render()


@pytest.mark.parametrize("by", [1, -1])
def test_actions_one_frame_off_their_observations_fail(recording, tmp_path, by):
    shifted = shift_actions(recording, tmp_path / "shifted", by=by)
    report = check_sync(shifted, "training")
    assert report.lags() == {by: 2}
    lag_errors = [p for p in report.errors if "shifted by" in p.message]
    assert len(lag_errors) == 2 and f"shifted by {by:+d} frames" in lag_errors[0].message
    assert data_main(["check", str(shifted), "--quick", "--sync"]) == 1
    assert data_main(["check", str(recording), "--quick", "--sync"]) == 0


def test_swapped_task_labels_are_mislabelled(recording, tmp_path):
    swapped = swap_labels(recording, tmp_path / "swapped")
    report = check_sync(swapped, "training")
    truth = CalvinSplit(recording, "training").lang.task
    assert [a.status for a in report.annotations] == ["mislabelled"] * 4
    for a in report.annotations:
        assert a.task != truth[a.index] and f"complete {truth[a.index]}" in a.detail
    assert len(report.errors) == 4 and "mislabelled" in report.render()


def test_a_window_that_ends_before_its_task_completes_is_misaligned(recording, tmp_path):
    copy = tmp_path / "early"
    shutil.copytree(recording, copy)
    _rewrite_annotations(copy / "training", lambda indx: indx - np.array([[0, 0], [30, 30], [0, 0], [0, 0]]))
    report = check_sync(copy, "training")
    moved = report.annotations[1]
    assert moved.status == "misaligned" and "30 frames after" in moved.detail, moved
    assert [a.failed for a in report.annotations] == [False, True, False, False]


def test_calvins_convention_of_ending_on_the_completed_state_passes(recording, tmp_path):
    """CALVIN's annotations end on the frame that shows the task completed; the recorder's one frame before."""
    copy = tmp_path / "calvin_ends"
    shutil.copytree(recording, copy)
    episodes = CalvinSplit(copy, "training").episodes
    _rewrite_annotations(copy / "training", lambda indx: np.stack(
        [indx[:, 0], [min(e + 1, next(b for a, b in episodes if a <= e <= b)) for e in indx[:, 1]]], axis=1))
    report = check_sync(copy, "training")
    assert report.errors == [] and [a.status for a in report.annotations].count("completed") >= 2


def test_the_other_gripper_sign_is_an_error(recording, tmp_path):
    flipped = flip_gripper(recording, tmp_path / "flipped")
    report = check_sync(flipped, "training")
    assert report.gripper.flipped and report.gripper.opened == 0
    assert any("gripper command has the other sign" in p.message for p in report.errors)
    assert report.lags() == {0: 2}  # the arm is still in step


def test_annotations_past_the_frames_read_are_left_out(recording):
    """The doctor reads at most --episode-frames of each episode: an annotation that ends past them is not
    checked, and not reported as running past its episode."""
    source = open_frames(recording, "training")
    indx = source.lang.indx
    stretches = []
    for b in stretch_bounds(source):
        first_end = min(int(e) for s, e in indx if b[1] <= s <= b[2])
        stretches.append(read_stretch(source, *b, max_frames=first_end - b[1] + 8))  # the state after it + 6 more
    assert all(st.last < st.stored_last for st in stretches)
    assert sum(st.first <= s <= st.last < e for s, e in indx for st in stretches) == 2  # start read, end not
    states = RecordedStates()
    try:
        report = sync_report(source, stretches, states)
    finally:
        states.close()
    assert report.problems == [], report.render()
    assert len(report.annotations) == 2 and all(a.status == "completed" for a in report.annotations)
    assert report.lags() == {0: 2}


def test_unreadable_annotations_are_an_error_and_the_actions_are_still_checked(recording, tmp_path):
    copy = tmp_path / "no_lang"
    shutil.copytree(recording, copy)
    lang_path = CalvinSplit(copy, "training").lang_path
    lang_path.unlink()
    report = check_sync(copy, "training")
    assert report.lags() == {0: 2} and report.annotations == []
    assert [p.where for p in report.errors] == [str(lang_path)], report.render()


def test_recorded_states_are_read_back_exactly(recording):
    """The sync check's env keeps restored poses as recorded; a reset as calvin_env's (one physics step) lets a
    held block settle by a fraction of a millimetre, enough to move a task's threshold by a frame."""
    source = open_frames(recording, "validation")
    stretch = read_stretch(source, *stretch_bounds(source)[0])
    env = RecordedStates().env(stretch.scene)
    settling = RecordedStates(env_options={"step_after_reset": True}).env(stretch.scene)
    exact_err, settled_err = [], []
    for row in range(0, len(stretch.scene_obs), 5):
        for e, errs in ((env, exact_err), (settling, settled_err)):
            obs = e.reset(stretch.robot_obs[row], stretch.scene_obs[row])
            errs.append(np.abs(obs["scene_obs"] - stretch.scene_obs[row]).max())
    assert max(exact_err) < 1e-9
    assert max(settled_err) > 1e-4  # what the exact read-back is for
