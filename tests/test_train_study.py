"""The structure study (harness/train/study.py): its table's columns, row-by-row resume, refused settings.

Two tiny rows on the session's scripted recording converted to shards, a CPU budget of a second, one episode per
task and one chain of a few steps: seconds, with the real trainer, checkpoints and harness.eval."""

from __future__ import annotations

import csv
import json

import pytest

from harness.train import study as S
from tests.train_helpers import ROOT  # noqa: F401  (one torch thread, quiet transformers)

ROWS = ("scratch_policy_head", "decoder_one_step")  # in the study's order
TINY = ("++model.backbone.tiny_size={hidden:64,vision_hidden:32,image_size:32,layers:1}", "model.head.hidden_size=32",
        "model.head.num_layers=1", "model.chunk_size=2", "trainer.val_samples=8", "trainer.batch_size=2")


@pytest.fixture(scope="module")
def shards(recording, tmp_path_factory):
    from harness.data.shards import convert

    out = tmp_path_factory.mktemp("study_data") / "shards"
    convert(recording, out, frames="annotated", progress=False)
    return out


def _settings(shards, out, **kw) -> S.StudySettings:
    base = dict(data=str(shards), out=str(out), budget_cpu_s=1.0, episodes_per_task=1, num_chains=1, rows=ROWS,
                overrides=TINY, ep_len=3, workers=0)
    return S.StudySettings(**{**base, **kw})


def test_rows_run_one_by_one_resume_and_refuse_incomparable_settings(shards, tmp_path, monkeypatch):
    out = tmp_path / "study"
    settings = _settings(shards, out)
    evaluate = S.evaluate_row

    def interrupted(settings, row, summary):
        if row.name == ROWS[1]:
            raise KeyboardInterrupt("interrupted after the second row's training")
        return evaluate(settings, row, summary)

    monkeypatch.setattr(S, "evaluate_row", interrupted)
    with pytest.raises(KeyboardInterrupt):
        S.run_study(settings, "test")
    first = (out / "rows" / ROWS[0] / S.ROW_DONE).read_text()
    assert not (out / "rows" / ROWS[1] / S.ROW_DONE).exists()
    trained = (out / "rows" / ROWS[1] / "train" / "summary.json").read_text()
    table = (out / S.MARKDOWN).read_text()
    assert "not finished" in table and ROWS[0] in table  # the table after the first row

    monkeypatch.setattr(S, "evaluate_row", evaluate)
    rows = S.run_study(settings, "test")
    assert (out / "rows" / ROWS[0] / S.ROW_DONE).read_text() == first  # a finished row is skipped
    assert (out / "rows" / ROWS[1] / "train" / "summary.json").read_text() == trained  # a trained row is not retrained
    assert [r["name"] for r in rows] == list(ROWS) and all(r["status"] == "done" for r in rows)

    with open(out / S.CSV, newline="") as f:
        table = list(csv.DictReader(f))
    assert tuple(table[0]) == S.CSV_COLUMNS and [r["name"] for r in table] == list(ROWS)
    for r in table:
        assert int(r["steps"]) > 0 and r["stopped_by"] == "max_cpu_s" and float(r["train_cpu_s"]) >= 1.0
        assert 0 < int(r["params_trainable"]) <= int(r["params_total"])
        assert int(r["single_task_episodes"]) == len(S.TASKS) and int(r["chains"]) == 1
        assert 0 <= float(r["single_task_success"]) <= 1 and float(r["single_task_low"]) <= float(r["single_task_high"])
        assert 0 <= float(r["avg_len"]) <= 5 and r["avg_len_low"] != ""
    markdown = (out / S.MARKDOWN).read_text()
    comparable = json.loads((out / S.SETTINGS).read_text())["comparable"]
    assert comparable["data_digest"] == S.data_digest(shards) and comparable["data_digest"][:16] in markdown
    assert "budget per row: 1 CPU seconds" in markdown
    assert "| decoder_one_step | decoder-only VLM | one-step | continuous (MLP) |" in markdown
    assert "| scratch_policy_head | no VLM (from scratch) | policy head | continuous (LSTM) |" in markdown

    # a table written for one row keeps the rows finished before (it held that row alone)
    S.write_study_table(_settings(shards, out, rows=(ROWS[1],)), "test")
    with open(out / S.CSV, newline="") as f:
        assert [r["name"] for r in csv.DictReader(f)] == list(ROWS)

    # more chains asked: a row evaluated on fewer says so until it is extended
    S.claim(_settings(shards, out, num_chains=2))
    S.write_study_table(_settings(shards, out, num_chains=2), "test")
    assert "evaluated on 8 episodes, 1 chains" in (out / S.MARKDOWN).read_text()

    # another budget, or a row's overrides changed: refused before anything is touched
    with pytest.raises(S.StudyError, match="budget_cpu_s: 1.0 -> 2.0"):
        S.run_study(_settings(shards, out, budget_cpu_s=2.0), "test")
    original = S.ROWS_BY_NAME[ROWS[0]]
    changed = S.StudyRow(ROWS[0], "scratch", "no VLM (from scratch)", "policy head", "continuous (LSTM)", ("model=scratch", "model.window_size=2"))
    monkeypatch.setitem(S.ROWS_BY_NAME, ROWS[0], changed)
    with pytest.raises(S.StudyError, match=f"row {ROWS[0]}"):
        S.run_study(settings, "test")
    assert (out / "rows" / ROWS[0] / S.ROW_DONE).read_text() == first
    monkeypatch.setitem(S.ROWS_BY_NAME, ROWS[0], original)

    # the recipe's yaml edited since (here: its learning rate): refused, naming the setting
    recipe = S.recipe_config
    monkeypatch.setattr(S, "recipe_config", lambda overrides: {**recipe(overrides), "optim.lr": 1.0})
    with pytest.raises(S.StudyError, match="recipe optim.lr: .* -> 1.0"):
        S.claim(_settings(shards, out, num_chains=2))


def test_bad_settings_are_named(tmp_path):
    with pytest.raises(S.StudyError, match="unknown row"):
        S.StudySettings(data=".", out=str(tmp_path), budget_cpu_s=1, rows=("nope",))
    with pytest.raises(S.StudyError, match="no training/ or validation/ split"):
        S.claim(S.StudySettings(data=str(tmp_path), out=str(tmp_path / "o"), budget_cpu_s=1))
    with pytest.raises(SystemExit, match="2"):  # the command line: one line naming the setting, status 2
        S.main([str(tmp_path / "missing"), str(tmp_path / "o"), "--budget-cpu-s", "1"])
    assert not (tmp_path / "o").exists()
