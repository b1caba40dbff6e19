"""The command line: scripts/train.sh's launcher translation, and a hydra multirun that ends in the sweep table."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.train.sweep import main as sweep_main
from tests.train_helpers import ENV, ROOT, TINY, dataset, run_cli  # noqa: F401  (fixture)

TRAIN_SH = str(ROOT / "scripts" / "train.sh")


def dry_run(*args: str, **env: str) -> str:
    proc = subprocess.run(["bash", TRAIN_SH, "--dry-run", *args], capture_output=True, text=True, timeout=30,
                          env={k: v for k, v in os.environ.items() if k not in ("NPROC_PER_NODE", "NNODES", "NODE_RANK",
                                                                                  "MASTER_ADDR", "MASTER_PORT")} | env)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip()


def test_train_sh_runs_the_module_or_torchrun_with_the_overrides_passed_through():
    assert dry_run("run_name=x", "optim.lr=1e-4") == "python -m harness.train run_name=x optim.lr=1e-4"
    assert dry_run("--nproc", "2", "-m", "optim.lr=1e-4,2e-5") == (
        "python -m torch.distributed.run --nproc_per_node 2 --standalone -m harness.train -m optim.lr=1e-4\\,2e-5")
    assert dry_run("--nproc=8", "--nnodes", "2", "--node_rank", "1", "--master_addr", "h0", "--master_port", "29500",
                   "run_name=x") == ("python -m torch.distributed.run --nproc_per_node 8 --nnodes 2 --node_rank 1 "
                                     "--master_addr h0 --master_port 29500 -m harness.train run_name=x")
    assert dry_run("run_name=x", NPROC_PER_NODE="4", NNODES="2", NODE_RANK="0", MASTER_ADDR="h0") == (
        "python -m torch.distributed.run --nproc_per_node 4 --nnodes 2 --node_rank 0 --master_addr h0 "
        "-m harness.train run_name=x")
    # a port, a rendezvous or more nodes given: no --standalone, which would override them or never meet the others
    assert dry_run("--nproc", "2", "--master_port", "29600", "x=1") == (
        "python -m torch.distributed.run --nproc_per_node 2 --master_port 29600 -m harness.train x=1")
    assert dry_run("--nproc", "2", "x=1", NNODES="2") == (
        "python -m torch.distributed.run --nproc_per_node 2 --nnodes 2 -m harness.train x=1")
    assert "--standalone --nnodes=1" in dry_run("--nproc", "2", "--nnodes=1", "x=1")


def test_train_sh_trains(dataset, tmp_path):
    venv = Path(sys.prefix)
    stamp = venv / ".vla-harness-installed"
    if not stamp.exists():  # (one it set up and the sources changed since is brought up to date first)
        pytest.skip("this venv was not set up by scripts/_venv.sh: the wrapper would install into it")
    out = tmp_path / "run"
    proc = subprocess.run(["bash", TRAIN_SH, "--nproc", "2", *TINY, f"data.path={dataset}", f"hydra.run.dir={out}",
                           "trainer.max_steps=2"], capture_output=True, text=True, timeout=300,
                          env={**ENV, "VLA_HARNESS_VENV": str(venv)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "checkpoints" / "last" / "model.safetensors").is_file()


def test_a_multirun_ends_in_the_sweep_table_with_the_best_run_named(dataset, tmp_path):
    sweep = tmp_path / "sweep"
    grid = ["optim.lr=1e-2,1e-4", "optim.weight_decay=0.0,0.1"]
    run_cli(["-m", *TINY, f"data.path={dataset}", f"hydra.sweep.dir={sweep}", "run_name=grid", "trainer.max_steps=3",
             "trainer.val_every=0", "trainer.keep_last=1", *grid])
    with (sweep / "sweep.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["run"] for r in rows] == ["0", "1", "2", "3"]
    assert list(rows[0])[:3] == ["run", "optim.lr", "optim.weight_decay"]  # the axes: overrides that differ
    assert {(float(r["optim.lr"]), float(r["optim.weight_decay"])) for r in rows} == {
        (lr, wd) for lr in (1e-2, 1e-4) for wd in (0.0, 0.1)}
    assert all(r["status"] == "done" and r["steps"] == "3" for r in rows)
    val = {r["run"]: float(r["val_loss"]) for r in rows}
    best = min(val, key=val.get)
    assert [r["run"] for r in rows if r["best"] == "True"] == [best]
    table = (sweep / "sweep.md").read_text()
    assert f"Best run: **{best}**" in table and table.count("\n| ") == 5  # header + 4 runs
    # the same table from the command line
    (sweep / "sweep.md").unlink()
    sweep_main([str(sweep)])
    assert (sweep / "sweep.md").read_text() == table

    # launched again with another grid: job 0 would have reported the old grid's finished run 0 as its own
    proc = run_cli(["-m", *TINY, f"data.path={dataset}", f"hydra.sweep.dir={sweep}", "run_name=grid", "trainer.max_steps=3",
                    "trainer.val_every=0", "trainer.keep_last=1", "optim.lr=1e-3", "optim.weight_decay=0.0,0.1"],
                   succeeds=False)
    assert f"{sweep / '0'} holds job 0 of another sweep (optim.lr=0.01), not this one's (optim.lr=0.001)" in proc.stderr
    assert (sweep / "sweep.md").read_text() == table
    # the same grid given more steps carries every run on
    run_cli(["-m", *TINY, f"data.path={dataset}", f"hydra.sweep.dir={sweep}", "run_name=grid", "trainer.max_steps=4",
             "trainer.val_every=0", "trainer.keep_last=1", *grid])
    with (sweep / "sweep.csv").open() as f:
        assert [r["steps"] for r in csv.DictReader(f)] == ["4"] * 4


def test_sweep_table_shows_rollout_intervals_and_the_runs_they_do_not_separate(tmp_path):
    """Three runs ranked by rollouts (summary.json as the trainer writes it, rollout metrics from real records):
    10/10, 9/10 and 2/10 episodes. 9/10's Wilson interval overlaps 10/10's; 2/10's does not."""
    from harness.eval.results import summarize
    from harness.eval.stats import wilson
    from harness.train.callbacks import rollout_metrics
    from tests.test_eval_results import record

    for run, successes in (("0", 10), ("1", 9), ("2", 2)):
        records = [record(f"open_drawer/{e}", [("open_drawer", "success" if e < successes else "timeout")]) for e in range(10)]
        rollout = rollout_metrics(summarize(records, "single_task"), "single_task")
        assert rollout["rollout/open_drawer_ci_low"] == pytest.approx(wilson(successes, 10).low, abs=1e-6)
        assert rollout["rollout/score_ci_high"] == pytest.approx(wilson(successes, 10).high, abs=1e-6)
        (tmp_path / run).mkdir()
        (tmp_path / run / "summary.json").write_text(json.dumps({
            "overrides": [f"optim.lr={run}"], "steps": 5, "val_loss": 0.1, "rollout": rollout,
            "best": {"metric": "rollout_success"}, "samples_per_s": 1.0}))
    sweep_main([str(tmp_path)])
    table = (tmp_path / "sweep.md").read_text()
    low, high = wilson(10, 10).low, wilson(10, 10).high
    assert f"Best run: **0** (`optim.lr=0`), rollout score 1 [{low:.4g}, {high:.4g}]" in table
    assert "Not separated from it by the rollouts (95 % intervals overlap): 1." in table
    with (tmp_path / "sweep.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert float(rows[2]["rollout_score_ci_low"]) == pytest.approx(wilson(2, 10).low, abs=1e-6)


def test_e2e_full_cpu_sh_refuses_an_unknown_split_before_it_installs_or_writes_anything(tmp_path):
    out = tmp_path / "e2e"
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "e2e_full_cpu.sh"), str(out)], capture_output=True,
                          text=True, timeout=30, env={**os.environ, "SPLITS": "D CD",
                                                      "VLA_HARNESS_VENV": str(tmp_path / "no_venv")})
    assert proc.returncode == 2
    assert "SPLITS holds 'CD'; the splits are D and ABC" in proc.stderr
    assert not out.exists() and not (tmp_path / "no_venv").exists()


def test_e2e_full_cpu_sh_refuses_to_carry_a_folder_on_with_other_settings(tmp_path):
    """Shards are never recorded again, and a training resumes with whatever overrides it is given: the same
    folder run again with other sizes or TRAIN_ARGS mixed two recipes in one run without a word."""
    venv = Path(sys.prefix)
    if not (venv / ".vla-harness-installed").exists():
        pytest.skip("this venv was not set up by scripts/_venv.sh: the script would install into it")
    out = tmp_path / "e2e"
    out.mkdir()
    first = "CHAINS_D=600 VAL_CHAINS=50 TRAIN_ARGS=\n"
    (out / "recipe_D.txt").write_text(first)
    proc = subprocess.run(["bash", str(ROOT / "scripts" / "e2e_full_cpu.sh"), str(out)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, "VLA_HARNESS_VENV": str(venv), "CHAINS_D": "200",
                                                       "TRAIN_ARGS": "trainer.max_steps=8 optim.lr=1e-4"})
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"{out}'s D run was started with other settings" in proc.stderr
    assert "now:  CHAINS_D=200 VAL_CHAINS=50 TRAIN_ARGS=trainer.max_steps=8 optim.lr=1e-4" in proc.stderr
    assert [f.name for f in out.iterdir()] == ["recipe_D.txt"] and (out / "recipe_D.txt").read_text() == first


def test_e2e_full_cpu_sh_takes_new_train_args_until_the_first_checkpoint(tmp_path):
    """A first run stopped by a mistyped override kept nothing of it: the same folder carries on with the right
    one. Once a checkpoint is written the overrides are the run's, and other ones are refused."""
    venv = Path(sys.prefix)
    if not (venv / ".vla-harness-installed").exists():
        pytest.skip("this venv was not set up by scripts/_venv.sh: the script would install into it")
    out = tmp_path / "e2e"
    (out / "shards_D").mkdir(parents=True)  # "recorded": the script goes straight to its training, which refuses it
    (out / "recipe_D.txt").write_text("CHAINS_D=600 VAL_CHAINS=50 TRAIN_ARGS=trainer.max_step=8\n")

    def run(train_args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", str(ROOT / "scripts" / "e2e_full_cpu.sh"), str(out)], capture_output=True,
                              text=True, timeout=300, env={**os.environ, "VLA_HARNESS_VENV": str(venv), "SPLITS": "D",
                                                           "CURVE_EVERY": "0", "TRAIN_ARGS": train_args})
    proc = run("trainer.max_steps=8")
    assert "training has no checkpoint yet: it starts with the new TRAIN_ARGS" in proc.stderr
    assert proc.returncode != 0 and "shards_D" in proc.stderr  # the training got as far as the (empty) data
    assert (out / "recipe_D.txt").read_text() == "CHAINS_D=600 VAL_CHAINS=50 TRAIN_ARGS=trainer.max_steps=8\n"

    (out / "train_D" / "checkpoints" / "step_0000004").mkdir(parents=True)
    proc = run("trainer.max_steps=16")
    assert proc.returncode == 2 and "'s D run was started with other settings" in proc.stderr
    assert (out / "recipe_D.txt").read_text() == "CHAINS_D=600 VAL_CHAINS=50 TRAIN_ARGS=trainer.max_steps=8\n"


def test_a_sweep_job_folder_is_compared_by_parsed_settings_with_swept_carry_on_keys_checked(tmp_path):
    import yaml

    from harness.train.sweep import JOB_RECORD, check_job_folder

    def job(number: int, *overrides: str, swept=("optim.schedule",)):
        folder = tmp_path / str(number)
        folder.mkdir(exist_ok=True)
        (folder / "config.yaml").write_text(yaml.safe_dump({"overrides": list(overrides)}))
        (folder / JOB_RECORD).write_text(json.dumps({"swept": list(swept)}))
        return folder

    def launch(*task: str) -> None:  # hydra's multirun.yaml, as a multirun writes it before its first job
        (tmp_path / "multirun.yaml").write_text(yaml.safe_dump({"hydra": {"overrides": {"task": list(task)}}}))

    common = ("run_name=g", "optim.lr=0.001", "+model.note=a", "data.path=/data/x")
    zero = job(0, *common, "optim.schedule=cosine", "trainer.max_steps=3")
    job(1, *common, "optim.schedule=constant", "trainer.max_steps=3")
    launch("run_name=g", "optim.schedule=cosine,constant", "trainer.max_steps=10", "data.path='${oc.env:NOWHERE}'")
    # the same job written otherwise, carried on with more steps, its data moved: the same run
    check_job_folder(zero, ["run_name='g'", "optim.lr=1e-3", "optim.schedule=cosine", "trainer.max_steps=10",
                            "++model.note=a", "data.path='/disk2/x, y'"])
    # optim.schedule is swept (cosine, constant): another value is another job, here and when the old launch swept it
    constant = ["run_name=g", "optim.lr=0.001", "optim.schedule=constant", "trainer.max_steps=3", "+model.note=a",
                "data.path=/data/x"]
    with pytest.raises(ValueError, match=r"holds job 0 of another sweep \(optim.schedule=cosine\), not this one's "
                                         r"\(optim.schedule=constant\)"):
        check_job_folder(zero, constant)
    launch("run_name=g", "optim.schedule=constant")
    with pytest.raises(ValueError, match=r"\(optim.schedule=cosine\), not this one's \(optim.schedule=constant\)"):
        check_job_folder(zero, constant)
    with pytest.raises(ValueError, match=r"\(model.note=a optim.lr=0.001\), not this one's \(model.note=\(unset\) "
                                         r"optim.lr=0.01\)"):
        check_job_folder(zero, ["run_name=g", "optim.lr=0.01", "optim.schedule=cosine", "trainer.max_steps=3"])
    # a carry-on stopped after job 0 (10 steps recorded there, 3 in job 1): the same command again goes on
    launch("run_name=g", "optim.schedule=cosine,constant", "trainer.max_steps=10")
    job(0, *common, "optim.schedule=cosine", "trainer.max_steps=10")
    check_job_folder(tmp_path / "1", [*common, "optim.schedule=constant", "trainer.max_steps=10"])
    # a swept data path (or steps) is the job's identity, not where it runs
    data = job(2, "data.path=/d/D", swept=("data.path",))
    launch("data.path=/d/ABC,/d/D")
    with pytest.raises(ValueError, match=r"\(data.path=/d/D\), not this one's \(data.path=/d/ABC\)"):
        check_job_folder(data, ["data.path=/d/ABC"])
    check_job_folder(tmp_path / "3", ["optim.lr=0.5"])  # a new job's folder: nothing to compare, its launch recorded
    assert json.loads((tmp_path / "3" / JOB_RECORD).read_text()) == {"swept": ["data.path"]}
