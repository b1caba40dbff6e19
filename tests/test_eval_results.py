"""CALVIN's metrics against hand-computed values, the results log and the resume check."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness.eval.jobs import chain_jobs, redrawn, single_task_jobs, task_starts
from harness.eval.results import calvin_metrics, calvin_printout, failure_reasons, running_summary, summarize
from harness.eval.store import ResultsLog, check_run_key, read_log, read_results, write_merged
from harness.tasks import TASK_NAMES, apply_task, initial_conditions, valid_tasks
from harness.tasks.catalog import task_index


def record(key: str, outcomes: list[tuple[str, str]], steps: int = 10, out_of_range: int = 0, attempts: int = 1) -> dict:
    """outcomes: (task, reason) per attempted subtask; 'success' or a failure reason."""
    subtasks = [{"task": t, "success": r == "success", "steps": steps, "reason": r, "message": "", "out_of_range": 0}
                for t, r in outcomes]
    completed = next((i for i, s in enumerate(subtasks) if not s["success"]), len(subtasks))
    return {"key": key, "index": int(key.split("/")[1]), "completed": completed, "subtasks": subtasks,
            "steps": steps * len(subtasks), "out_of_range": out_of_range, "attempts": attempts, "wall_s": 0.1}


RECORDS = [
    record("chain/0", [("open_drawer", "timeout")]),
    record("chain/1", [("open_drawer", "success"), ("turn_on_led", "success"), ("lift_red_block_table", "invalid_action")],
           out_of_range=4),
    record("chain/2", [("move_slider_left", "success"), ("open_drawer", "success"), ("turn_on_led", "success"),
                       ("lift_red_block_table", "success"), ("place_in_drawer", "success")]),
    record("chain/3", [("turn_on_led", "success"), ("open_drawer", "env_error")], attempts=2),
]


def test_calvin_metrics_by_hand():
    m = calvin_metrics(RECORDS)
    # completed per chain: 0, 2, 5, 1
    assert m["avg_seq_len"] == pytest.approx(8 / 4)
    assert m["chain_sr"] == {"1": 0.75, "2": 0.5, "3": 0.25, "4": 0.25, "5": 0.25}
    # total = successes + the one failing attempt; in CALVIN's task order
    assert m["task_info"] == {
        "move_slider_left": {"success": 1, "total": 1},
        "open_drawer": {"success": 2, "total": 4},
        "lift_red_block_table": {"success": 1, "total": 2},
        "place_in_drawer": {"success": 1, "total": 1},
        "turn_on_led": {"success": 3, "total": 3},
    }
    assert list(m["task_info"])[0] == "move_slider_left"
    assert calvin_metrics([])["avg_seq_len"] == 0.0


def test_summary_additions_and_printout():
    s = summarize(RECORDS, "chains")
    assert s["failure_reasons"] == {"timeout": 1, "invalid_action": 1, "agent_error": 0, "env_error": 1}
    assert s["actions"] == {"steps": 110, "out_of_range_relative": 4, "retried_after_env_error": 1,
                            "rerun_after_worker_death": 0}
    assert s["num_chains"] == 4
    text = calvin_printout(s)
    assert text.splitlines()[:7] == ["Average successful sequence length: 2.000", "Success rates for i instructions in a row:",
                                     "1: 75.0%", "2: 50.0%", "3: 25.0%", "4: 25.0%", "5: 25.0%"]
    assert "open_drawer: 2 / 4 |  SR: 50.0%" in text
    assert running_summary([0, 2, 5, 1]).startswith("1/5 : 75.0% | 2/5 : 50.0%")
    assert failure_reasons([]) == {"timeout": 0, "invalid_action": 0, "agent_error": 0, "env_error": 0}


def test_single_task_metrics_by_hand():
    recs = [record("open_drawer/0", [("open_drawer", "success")]), record("open_drawer/1", [("open_drawer", "timeout")]),
            record("turn_on_led/0", [("turn_on_led", "success")])]
    s = summarize(recs, "single_task")
    assert s["tasks"]["open_drawer"] == {"success": 1, "total": 2, "rate": 0.5}
    assert s["success_rate"] == pytest.approx(2 / 3) and s["mean_task_success_rate"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="mode"):
        summarize(recs, "bogus")


def test_jobs():
    jobs = chain_jobs(3, seed=10)
    assert [j.key for j in jobs] == ["chain/0", "chain/1", "chain/2"] and [j.seed for j in jobs] == [10, 11, 12]
    assert jobs[0].tasks[0] == "rotate_blue_block_right" and len(jobs[0].tasks) == 5
    a = single_task_jobs(["open_drawer", "turn_on_led"], 3, seed=1)
    b = single_task_jobs(["turn_on_led"], 5, seed=1)
    assert [j.key for j in a] == ["open_drawer/0", "open_drawer/1", "open_drawer/2", "turn_on_led/0", "turn_on_led/1", "turn_on_led/2"]
    # an episode depends only on (seed, task, episode): the same whatever else is asked for
    assert [(j.condition, j.seed) for j in a[3:]] == [(j.condition, j.seed) for j in b[:3]]
    assert all(j.condition["led"] == 0 and not j.setup for j in b)  # turn_on_led starts with the LED off
    # episodes of the 27 tasks that start from a start condition are drawn as before setups existed
    conditions = initial_conditions()
    valid = [i for i, c in enumerate(conditions) if "turn_on_led" in valid_tasks(c)]
    for e, job in enumerate(b):
        rng = np.random.default_rng(np.random.SeedSequence([1, task_index("turn_on_led"), e]))
        assert job.condition == conditions[valid[int(rng.integers(len(valid)))]]


def test_every_task_has_single_task_episodes_the_seven_after_a_setup():
    jobs = single_task_jobs(None, 4)
    assert sorted({j.tasks[0] for j in jobs}) == sorted(TASK_NAMES) and len(jobs) == 4 * 34
    set_up = {j.tasks[0] for j in jobs if j.setup}
    assert set_up == {"place_in_slider", "place_in_drawer", "stack_block", "unstack_block", "lift_red_block_drawer",
                      "lift_blue_block_drawer", "lift_pink_block_drawer"}
    for job in jobs:  # the setup is a valid sequence from the start condition, and leaves the task valid
        state = dict(job.condition)
        for task in job.setup:
            assert task in valid_tasks(state)
            state = apply_task(state, task)
        assert job.tasks[0] in valid_tasks(state)
    assert {len(j.setup) for j in jobs if j.tasks[0] == "unstack_block"} == {2}  # a lift, then stack_block
    assert all(len(setup) == 1 for _, setup in task_starts("place_in_slider"))  # the shortest setups only
    # never a lift from the slider before place_in_slider: opening the gripper would place the block
    assert {setup[0].split("_")[-1] for _, setup in task_starts("place_in_slider")} == {"table"}
    job = next(j for j in jobs if j.setup)
    again = redrawn(job, 1)
    assert (again.key, again.index, again.tasks, again.seed) == (job.key, job.index, job.tasks, job.seed)
    assert again == redrawn(job, 1) and again.to_dict()["setup"] == list(again.setup)
    drawn = [(job.condition, job.setup)] + [(redrawn(job, d).condition, redrawn(job, d).setup) for d in range(1, 5)]
    assert all(a != b for k, a in enumerate(drawn) for b in drawn[k + 1:])  # each draw another start


def test_results_log_survives_a_torn_last_line(tmp_path):
    path = tmp_path / "results.jsonl"
    with ResultsLog(path) as log:
        log.append(RECORDS[0])
        log.append(RECORDS[1])
    with open(path, "a") as f:
        f.write('{"key": "chain/2", "compl')  # killed mid-write
    assert set(read_log(path)) == {"chain/0", "chain/1"}
    with ResultsLog(path) as log:  # appending first cuts the torn line off
        log.append(RECORDS[2])
    lines = path.read_text().splitlines()
    assert [json.loads(line)["key"] for line in lines] == ["chain/0", "chain/1", "chain/2"]


def test_rank_logs_merge(tmp_path):
    with ResultsLog(tmp_path / "results.jsonl") as log:
        log.append(RECORDS[0])
    for rank, rec in ((0, RECORDS[2]), (1, RECORDS[1]), (1, RECORDS[0])):
        with ResultsLog(tmp_path / f"results.rank{rank}.jsonl") as log:
            log.append(rec)
    merged = read_results(tmp_path)
    assert set(merged) == {"chain/0", "chain/1", "chain/2"}
    write_merged(tmp_path, [merged[k] for k in ("chain/0", "chain/1", "chain/2")])
    assert not list(tmp_path.glob("results.rank*")) and list(read_log(tmp_path / "results.jsonl")) == ["chain/0", "chain/1", "chain/2"]


def test_run_key_refuses_other_settings(tmp_path):
    key = {"mode": "chains", "ep_len": 360, "seed": 0, "agent": {"name": "random"}}
    check_run_key(tmp_path, key)
    check_run_key(tmp_path, dict(key))  # same: fine
    with pytest.raises(ValueError, match="differs in: ep_len, seed"):
        check_run_key(tmp_path, {**key, "ep_len": 100, "seed": 1})


def test_a_moved_checkpoint_with_the_same_digest_is_the_same_agent_and_other_weights_are_refused(tmp_path):
    agent = {"name": "vla", "kwargs": {"checkpoint": "/runs/x/checkpoints/step_0000002", "dtype": "auto"}}
    key = {"mode": "chains", "seed": 0, "agent": agent}
    check_run_key(tmp_path, key)  # before the digest joined the key: unknown, taken from the rerun
    check_run_key(tmp_path, {**key, "weights": "aa"})
    assert json.loads((tmp_path / "run.json").read_text())["weights"] == "aa"
    moved = {**agent, "kwargs": {**agent["kwargs"], "checkpoint": "/disk2/x/checkpoints/step_0000002"}}
    check_run_key(tmp_path, {**key, "agent": moved, "weights": "aa"})  # the run folder moved: the same model
    assert json.loads((tmp_path / "run.json").read_text())["agent"] == moved  # the rerun's path recorded
    with pytest.raises(ValueError, match="differs in: weights"):  # the step trained again with other settings
        check_run_key(tmp_path, {**key, "agent": moved, "weights": "bb"})
    other = {**moved, "kwargs": {**moved["kwargs"], "dtype": "bfloat16"}}
    with pytest.raises(ValueError, match="differs in: agent"):  # the path may move, nothing else
        check_run_key(tmp_path, {**key, "agent": other, "weights": "aa"})
    unknown = tmp_path / "unknown"
    check_run_key(unknown, key)
    with pytest.raises(ValueError, match="differs in: agent"):  # moved, and what it was is unknown
        check_run_key(unknown, {**key, "agent": moved, "weights": "aa"})


def test_success_by_position_and_first_vs_later_by_hand():
    s = summarize(RECORDS, "chains")
    # chain/0 fails at 1; chain/1 fails at 3; chain/2 succeeds 5 times; chain/3 fails at 2
    assert s["positions"] == {"1": {"success": 3, "total": 4}, "2": {"success": 2, "total": 3},
                              "3": {"success": 1, "total": 2}, "4": {"success": 1, "total": 1},
                              "5": {"success": 1, "total": 1}}
    assert s["task_positions"]["open_drawer"] == {"first": {"success": 1, "total": 2}, "later": {"success": 1, "total": 2}}
    assert s["task_positions"]["turn_on_led"] == {"first": {"success": 1, "total": 1}, "later": {"success": 2, "total": 2}}
    assert s["task_positions"]["place_in_drawer"] == {"first": {"success": 0, "total": 0}, "later": {"success": 1, "total": 1}}
    assert list(s["task_positions"]) == list(s["task_info"])
    assert summarize([], "chains")["positions"]["5"] == {"success": 0, "total": 0}


def test_a_setting_missing_from_an_older_run_json_counts_as_null(tmp_path):
    check_run_key(tmp_path, {"mode": "chains", "seed": 0})  # written before job_timeout_s joined the key
    check_run_key(tmp_path, {"mode": "chains", "seed": 0, "job_timeout_s": None})
    with pytest.raises(ValueError, match="differs in: job_timeout_s"):
        check_run_key(tmp_path, {"mode": "chains", "seed": 0, "job_timeout_s": 60.0})


def test_job_timeout_must_be_positive_and_is_part_of_the_run_key():
    from harness.eval.config import EvalSettings
    from harness.eval.specs import AgentConfig, EnvConfig

    for bad in (0, -1.0):
        with pytest.raises(ValueError, match=f"job_timeout_s must be > 0 seconds .*got {bad}"):
            EvalSettings(job_timeout_s=bad)
    env, agent = EnvConfig(), AgentConfig("random")
    assert EvalSettings(job_timeout_s=30).run_key(env, agent) != EvalSettings().run_key(env, agent)


def test_single_task_image_noise_refuses_a_folder_of_the_rendered_setup(tmp_path):
    """Single-task setups no longer render (so no longer draw image noise): a folder of image-noise single-task
    results written before cannot be extended by the new setup; chains and noise-free runs keep their key."""
    from harness.envs.perturbations import Perturbations
    from harness.eval.config import EvalSettings
    from harness.eval.specs import AgentConfig, EnvConfig

    agent, noisy = AgentConfig("random"), EnvConfig(perturb=Perturbations(image_noise=1))
    key = EvalSettings(mode="single_task").run_key(noisy, agent)
    assert key["setup"] == "unrendered"
    check_run_key(tmp_path / "old", {k: v for k, v in key.items() if k != "setup"})  # before the change
    with pytest.raises(ValueError, match="differs in: setup"):
        check_run_key(tmp_path / "old", key)
    for settings, env in ((EvalSettings(mode="single_task"), EnvConfig(perturb=Perturbations(blur=1))),
                          (EvalSettings(mode="single_task"), EnvConfig()), (EvalSettings(), noisy)):
        assert "setup" not in settings.run_key(env, agent)


def test_a_checkpoint_link_is_keyed_by_the_folder_it_names(tmp_path):
    """A run's checkpoints/last moved on by more training: the rerun in the same folder is refused instead of
    mixing two models' chains, and the agent loads the folder the link named when the evaluation began; a
    checkpoint folder named directly keys as it always did; a run.json from before the key had it is accepted
    once and then records it."""
    import json

    from harness.eval.config import EvalSettings, pin_checkpoint
    from harness.eval.specs import AgentConfig, EnvConfig

    for step in ("step_0000002", "step_0000004"):
        (tmp_path / step).mkdir()
    last = tmp_path / "last"
    last.symlink_to("step_0000002")
    agent = AgentConfig("vla", {"checkpoint": str(last), "dtype": "auto"})

    def key(a=agent):
        return EvalSettings().run_key(EnvConfig(), a)

    assert key()["checkpoint"] == "step_0000002" and key()["agent"]["kwargs"]["checkpoint"] == str(last)
    assert pin_checkpoint(agent).kwargs == {"checkpoint": str(tmp_path / "step_0000002"), "dtype": "auto"}
    assert "checkpoint" not in key(pin_checkpoint(agent))
    check_run_key(tmp_path / "eval", key())
    last.unlink()
    last.symlink_to("step_0000004")
    with pytest.raises(ValueError, match="differs in: checkpoint"):
        check_run_key(tmp_path / "eval", key())
    legacy = {k: v for k, v in key().items() if k != "checkpoint"}
    check_run_key(tmp_path / "old", legacy)
    check_run_key(tmp_path / "old", key())
    assert json.loads((tmp_path / "old" / "run.json").read_text())["checkpoint"] == "step_0000004"


def test_a_setting_that_is_not_a_number_is_named():
    from harness.eval.config import EvalSettings, split_settings

    def settings(d):
        return split_settings(d, (), "")[1]

    base = {"mode": "chains", "num_chains": 3, "episodes_per_task": 1, "ep_len": 5, "workers": 0, "seed": 0}
    assert settings(base).job_timeout_s is None and settings({**base, "job_timeout_s": 30}).job_timeout_s == 30.0
    assert settings({**base, "videos": True, "video_failures": True}).video_failures == 10
    for key, value, kind in (("num_chains", "abc", "an integer"), ("ep_len", None, "an integer"),
                             ("job_timeout_s", "soon", "a number"), ("workers", 1.5, "an integer"),
                             ("progress", "yes", "true or false")):
        with pytest.raises(ValueError, match=f"^{key} must be {kind}, got {value!r}$"):
            settings({**base, key: value})
    assert EvalSettings().num_chains == 100  # the command's default, in one place


def test_a_last_record_without_its_newline_runs_again(tmp_path):
    """A kill between a record's last byte and its newline: the record is not counted (appending cuts it off), so
    its chain runs again and the resumed run holds every chain asked for; a rerun asking fewer chains than the
    folder holds runs none and says so."""
    from harness.eval import AgentConfig, evaluate_chains

    def run(chains: int) -> dict:
        return evaluate_chains(AgentConfig("random"), num_chains=chains, ep_len=5, output_dir=tmp_path)

    first = run(3)
    log = tmp_path / "results.jsonl"
    log.write_bytes(log.read_bytes().rstrip(b"\n"))
    assert set(read_log(log)) == {"chain/0", "chain/1"}
    again = run(3)
    assert again["num_chains"] == 3 and again["timings"]["jobs_run_now"] == 1
    assert again["chain_sr"] == first["chain_sr"] and len(log.read_text().splitlines()) == 3
    assert run(2)["timings"]["jobs_run_now"] == 0


def test_overwrite_discards_everything_the_earlier_run_wrote(tmp_path):
    """A run with overwrite=true killed before its reports are written must not leave the earlier run's reports,
    env description, failure analysis, traces or videos beside its own records (compare reads them)."""
    from harness.eval import AgentConfig, evaluate_chains
    from harness.eval.store import clear_results

    evaluate_chains(AgentConfig("random"), num_chains=2, ep_len=5, output_dir=tmp_path, video_failures=1, videos=1)
    for name in ("failures.md", "failures.json", "server.rank0.json", ".run.json.tmp-4242"):  # a write killed
        (tmp_path / name).write_text("{}")                                                       # before its rename
    before = {p.name for p in tmp_path.iterdir()}
    assert {"results.json", "report.md", "description.json", "traces", "videos", "chain_success.png"} <= before
    clear_results(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"config.yaml"} & before


def test_a_checkpoint_link_is_keyed_by_its_target_as_written(tmp_path):
    """run.json's "checkpoint" is the link's target as written (`./step_X` from a hand-made link), as before the
    key read the link once: an older run.json of such a link still matches."""
    import os

    from harness.eval.config import EvalSettings, pin_checkpoint
    from harness.eval.specs import AgentConfig, EnvConfig

    step = tmp_path / "checkpoints" / "step_0000004"
    step.mkdir(parents=True)
    (step / "model.safetensors").write_bytes(b"weights")
    os.symlink("./step_0000004", tmp_path / "checkpoints" / "last")
    agent = AgentConfig("vla", {"checkpoint": str(tmp_path / "checkpoints" / "last")})
    pinned = pin_checkpoint(agent)
    key = EvalSettings().run_key(EnvConfig(), agent, pinned)
    assert key["checkpoint"] == "./step_0000004" and len(key["weights"]) == 32
    (tmp_path / "checkpoints" / "last").unlink()  # the link moved on after the pin: the key names what was pinned
    os.symlink("step_0000008", tmp_path / "checkpoints" / "last")
    assert EvalSettings().run_key(EnvConfig(), agent, pinned)["checkpoint"] == "step_0000004"


def test_live_agents_of_two_checkpoints_do_not_share_a_folder(tmp_path):
    """A live agent was keyed by its class alone: load_agent(a) then load_agent(b) into one output_dir resumed b
    on a's chains. Its checkpoint's digest is in the key now (an older run.json without it still resumes)."""
    import shutil

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    from agents import load_agent
    from harness.eval import evaluate_chains
    from tests.serve_helpers import save_tiny_checkpoint

    first = save_tiny_checkpoint(tmp_path / "tiny")
    second = tmp_path / "second"
    shutil.copytree(first, second)
    with safe_open(str(second / "model.safetensors"), framework="pt") as f:
        metadata = f.metadata()
    save_file({k: v + 1e-3 for k, v in load_file(str(second / "model.safetensors")).items()},
              str(second / "model.safetensors"), metadata=metadata)

    def evaluate(folder):
        return evaluate_chains(load_agent(folder), num_chains=1, ep_len=3, workers=0, output_dir=tmp_path / "eval")

    evaluate(first)
    assert evaluate(first)["timings"]["jobs_run_now"] == 0  # the same checkpoint resumes
    with pytest.raises(ValueError, match="differs in: weights"):
        evaluate(second)


def test_an_auto_dtype_is_keyed_by_what_it_became(tmp_path):
    """`dtype: auto` is float32 on CPU and bf16 on a GPU, and the device is not in the key: a run killed on CPU and
    resumed on a GPU mixed two precisions' chains under one key. The dtype it became is in the key now; a run.json
    from before records it on the first rerun."""
    import json

    from harness.eval.config import EvalSettings
    from harness.eval.specs import AgentConfig, EnvConfig

    agent = AgentConfig("vla", {"checkpoint": str(tmp_path / "ckpt"), "dtype": "auto", "device": "cpu"})
    key = EvalSettings().run_key(EnvConfig(), agent)
    assert key["precision"] == "float32"
    assert "precision" not in EvalSettings().run_key(EnvConfig(), AgentConfig("vla", {**agent.kwargs, "dtype": "bfloat16"}))
    assert "precision" not in EvalSettings().run_key(EnvConfig(), AgentConfig("scripted"))
    check_run_key(tmp_path / "gpu", {**key, "precision": "bfloat16"})
    with pytest.raises(ValueError, match="differs in: precision"):
        check_run_key(tmp_path / "gpu", key)
    check_run_key(tmp_path / "old", {k: v for k, v in key.items() if k != "precision"})
    check_run_key(tmp_path / "old", key)
    assert json.loads((tmp_path / "old" / "run.json").read_text())["precision"] == "float32"
