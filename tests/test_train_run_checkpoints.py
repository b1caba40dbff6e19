"""The run's checkpoint folders (harness/train/run_checkpoints.py): `last` always names a complete step folder,
and what could make a resume start over or fail at its first save is refused or repaired before any work."""

from __future__ import annotations

import errno
import json
import os
import shutil
from pathlib import Path

import pytest

from harness.train.run_checkpoints import RunCheckpoints


def _write(content: str):
    return lambda folder: (folder / "weights").write_text(content)


def test_last_names_the_newest_complete_step_and_saving_a_step_again_replaces_it(tmp_path):
    ckpts = RunCheckpoints(tmp_path, keep_last=0)
    assert ckpts.latest() is None
    ckpts.save(2, _write("a"))
    ckpts.save(4, _write("b"))
    assert ckpts.latest() == (tmp_path / "step_0000004").resolve()
    ckpts.save(4, _write("c"))  # resumed by hand from an earlier step, the same step saved again
    assert (ckpts.latest() / "weights").read_text() == "c"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last", "step_0000002", "step_0000004"]


def test_a_step_is_on_disk_before_it_is_named(tmp_path, monkeypatch):
    """A machine that goes away (not only a killed process) must not leave `last` on a folder whose files never
    reached the disk: every file and folder of the step is fsynced before the rename that names it, and the
    checkpoints folder after it."""
    synced, renamed = [], []

    def fsync(fd):
        synced.append(Path(os.readlink(f"/proc/self/fd/{fd}")))

    real_rename = Path.rename

    def rename(self, target):
        renamed.append((Path(self), len(synced)))
        return real_rename(self, target)

    def write(folder):
        (folder / "tokenizer").mkdir()
        (folder / "tokenizer" / "vocab.json").write_text("{}")
        (folder / "model.safetensors").write_bytes(b"weights")

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(Path, "rename", rename)
    RunCheckpoints(tmp_path, keep_last=0).save(2, write)
    tmp = tmp_path / ".step_0000002.tmp"
    (source, synced_before), = renamed
    assert source == tmp
    assert set(synced[:synced_before]) == {tmp, tmp / "tokenizer", tmp / "tokenizer" / "vocab.json",
                                           tmp / "model.safetensors"}
    assert synced[-1] == tmp_path


@pytest.mark.parametrize("error, saved", [(errno.EINVAL, True), (errno.EIO, False)])
def test_a_file_system_that_cannot_fsync_a_folder_still_saves_but_a_failing_disk_stops(tmp_path, monkeypatch,
                                                                                        error, saved):
    """Some network and FUSE mounts answer EINVAL to a folder's fsync: a save goes on there. An I/O error stops it."""
    real_fsync = os.fsync

    def fsync(fd):
        if os.path.isdir(os.readlink(f"/proc/self/fd/{fd}")):
            raise OSError(error, os.strerror(error))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    ckpts = RunCheckpoints(tmp_path, keep_last=0)
    if saved:
        assert (ckpts.save(2, _write("a")) / "weights").read_text() == "a"
    else:
        with pytest.raises(OSError, match=os.strerror(errno.EIO)):
            ckpts.save(2, _write("a"))
        assert ckpts.latest() is None


def test_a_kill_while_a_step_is_saved_again_leaves_the_old_one_in_place(tmp_path):
    """Killed after the old folder went aside and before the new one took its name: `last` dangles for that
    moment; the next start puts the old folder back instead of starting the run over."""
    ckpts = RunCheckpoints(tmp_path, keep_last=0)
    ckpts.save(4, _write("old"))
    (tmp_path / "step_0000004").rename(tmp_path / ".step_0000004.old")  # the state the kill leaves
    assert (ckpts.latest() / "weights").read_text() == "old"


def test_a_last_link_to_nothing_is_refused_instead_of_starting_over(tmp_path):
    ckpts = RunCheckpoints(tmp_path, keep_last=0)
    ckpts.save(6, _write("x"))
    os.rename(tmp_path / "step_0000006", tmp_path / "elsewhere")
    with pytest.raises(RuntimeError, match=r"last points to step_0000006, which does not exist"):
        ckpts.latest()


@pytest.mark.parametrize("with_step_folder", [True, False])
def test_a_run_folder_copied_with_its_links_followed_gets_its_links_back(tmp_path, with_step_folder):
    """shutil.copytree and rsync -L turn `last` and `best` into folders: a resume would fail at its first save (a
    link cannot replace a folder). Each becomes the step folder its trainer_state.json names again, and a link."""
    original = tmp_path / "run"
    ckpts = RunCheckpoints(original, keep_last=0)
    for step in (2, 4):
        ckpts.save(step, lambda folder, step=step: (folder / "trainer_state.json").write_text(json.dumps({"step": step})))
    ckpts.link_best(original / "step_0000002")
    copy = tmp_path / "copy"
    shutil.copytree(original, copy)  # follows the links
    if not with_step_folder:
        shutil.rmtree(copy / "step_0000004")
    assert not (copy / "last").is_symlink()
    copied = RunCheckpoints(copy, keep_last=0)
    assert copied.latest() == (copy / "step_0000004").resolve()
    assert os.readlink(copy / "last") == "step_0000004" and os.readlink(copy / "best") == "step_0000002"
    copied.save(6, _write("x"))  # the first save works
    (copy / "best").unlink()
    (copy / "best").mkdir()  # nothing says which step it holds
    with pytest.raises(RuntimeError, match="best is a folder, not a link to a step folder"):
        copied.latest()
