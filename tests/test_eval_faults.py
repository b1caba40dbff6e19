"""Faults inside worker processes: an env that raises, a worker that dies. The evaluation goes on."""

from __future__ import annotations

import json

import pytest

from harness.eval import AgentConfig, EnvConfig, evaluate_chains
from harness.eval.jobs import chain_jobs
from harness.tasks import initial_state

PRESSER = AgentConfig("button_presser", factory="tests.eval_agents:make_button_presser")
NUM_CHAINS, EP_LEN, BAD = 4, 20, 1  # chain 1 starts with turn_off_led, which the presser completes


def run(folder, env: EnvConfig) -> dict[int, dict]:
    evaluate_chains(PRESSER, num_chains=NUM_CHAINS, ep_len=EP_LEN, workers=2, env=env, output_dir=folder)
    lines = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    assert len(lines) == NUM_CHAINS
    return {r["index"]: r for r in lines}


def outcome(record: dict) -> tuple:
    return record["completed"], json.dumps(record["subtasks"]), record["final_state"]


def flaky(tmp_path, action: str, times: int | None) -> EnvConfig:
    bad_scene_obs = initial_state(chain_jobs(NUM_CHAINS)[BAD].condition, "D")[1].tolist()
    return EnvConfig(factory="tests.eval_agents:FlakyEnv", options={
        "fail_scene_obs": bad_scene_obs, "action": action, "times": times, "marker": str(tmp_path / "marker")})


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    records = run(tmp_path_factory.mktemp("baseline"), EnvConfig())
    assert records[BAD]["completed"] == 1 and records[BAD]["attempts"] == 1
    return records


def assert_others_unchanged(records, baseline):
    for i in range(NUM_CHAINS):
        if i != BAD:
            assert outcome(records[i]) == outcome(baseline[i])


def test_a_render_process_that_dies_costs_its_video_nothing_but_time(tmp_path, baseline):
    marker = tmp_path / "render_died"
    env = EnvConfig(factory="tests.eval_agents:env_killing_the_first_render_process", options={"marker": str(marker)})
    results = evaluate_chains(PRESSER, num_chains=NUM_CHAINS, ep_len=EP_LEN, workers=2, env=env, output_dir=tmp_path,
                              videos=2, video_failures=2)
    assert marker.exists() and len(results["videos"]) == 4  # chains 0 and 1 whole, the failures of 2 and 3
    assert all((tmp_path / v).stat().st_size > 0 for v in results["videos"])
    assert results["timings"]["videos_during_rollouts"] == 3  # the lost one was rendered at the end
    records = {json.loads(line)["index"]: json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()}
    assert all(outcome(records[i]) == outcome(baseline[i]) for i in range(NUM_CHAINS))


def test_env_raising_twice_records_env_error(tmp_path, baseline):
    records = run(tmp_path / "out", flaky(tmp_path, "raise", None))
    bad = records[BAD]
    assert bad["attempts"] == 2 and bad["completed"] == 0
    assert [(s["reason"], s["steps"]) for s in bad["subtasks"]] == [("env_error", 2)]
    assert "simulated physics blow-up" in bad["subtasks"][0]["message"]
    assert_others_unchanged(records, baseline)
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert results["failure_reasons"]["env_error"] == 1 and results["actions"]["retried_after_env_error"] == 1


def test_env_raising_once_is_retried_with_the_same_result(tmp_path, baseline):
    records = run(tmp_path / "out", flaky(tmp_path, "raise", 1))
    assert records[BAD]["attempts"] == 2
    assert outcome(records[BAD]) == outcome(baseline[BAD])  # the retry starts the chain afresh
    assert_others_unchanged(records, baseline)


def test_a_dead_worker_is_replaced_and_its_chain_run_again(tmp_path, baseline):
    records = run(tmp_path / "out", flaky(tmp_path, "kill", 1))
    assert len((tmp_path / "marker").read_text().splitlines()) == 1  # a worker really died
    assert outcome(records[BAD]) == outcome(baseline[BAD])
    # the record says so (a chain run again after its worker died looked like any other)
    assert records[BAD]["worker_deaths"] == 1 and all("worker_deaths" not in records[i] for i in records if i != BAD)
    actions = json.loads((tmp_path / "out" / "results.json").read_text())["actions"]
    assert actions["rerun_after_worker_death"] == 1 and "after their worker died: 1" in (tmp_path / "out" / "report.md").read_text()
    assert_others_unchanged(records, baseline)


def test_a_chain_that_kills_two_workers_is_an_env_error(tmp_path, baseline):
    records = run(tmp_path / "out", flaky(tmp_path, "kill", None))
    bad = records[BAD]
    assert [s["reason"] for s in bad["subtasks"]] == ["env_error"] and "died twice" in bad["subtasks"][0]["message"]
    assert_others_unchanged(records, baseline)


def test_a_hung_chain_is_killed_retried_once_then_an_env_error(tmp_path):
    from harness.eval import EvalSettings, run_evaluation

    agent = AgentConfig("hangs", {"what": "hang", "bad_seed": 1}, factory="tests.eval_agents:Misbehaving")
    settings = EvalSettings(num_chains=3, ep_len=5, workers=2, job_timeout_s=5, progress=False, videos=0, video_failures=0)
    results = run_evaluation(settings, EnvConfig(), agent, tmp_path, print_summary=False)
    lines = {json.loads(line)["index"]: json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()}
    assert sorted(lines) == [0, 1, 2]
    assert "ran past job_timeout_s=5 twice" in lines[1]["subtasks"][0]["message"]
    assert [lines[i]["subtasks"][0]["reason"] for i in (0, 2)] == ["timeout", "timeout"]
    assert results["failure_reasons"]["env_error"] == 1


def test_each_chain_gets_a_new_env_unless_told_otherwise():
    from harness.eval.runner import JobRunner, RunSettings

    jobs = chain_jobs(2)
    for fresh in (True, False):
        runner = JobRunner(EnvConfig(fresh_per_chain=fresh), AgentConfig("random"), RunSettings(ep_len=3))
        try:
            envs = []
            for job in jobs:
                runner.run(job)
                envs.append(runner.env)
            assert (envs[0] is not envs[1]) == fresh
        finally:
            runner.close()


def test_a_failure_outside_the_steps_of_a_setup_reruns_the_episode(tmp_path):
    """Not only env.step: anything the env raises while a single-task setup runs is an env failure, so the env is
    rebuilt and the episode run again (it stopped the whole evaluation as a worker error)."""
    from harness.eval import evaluate_single_tasks

    env = EnvConfig(factory="tests.eval_agents:SetupFailingOnce", options={"marker": str(tmp_path / "failed")})
    results = evaluate_single_tasks(AgentConfig("scripted"), env=env, tasks=["place_in_slider"], episodes_per_task=1,
                                    workers=1, output_dir=tmp_path / "out")
    record = json.loads((tmp_path / "out" / "results.jsonl").read_text())
    assert (tmp_path / "failed").exists() and record["attempts"] == 2 and results["tasks"]["place_in_slider"]["success"] == 1


def test_waiting_for_the_agents_server_does_not_count_against_the_job_time_limit(tmp_path):
    """Two outages of 6 s in one chain under job_timeout_s=5: the chain waits them out and ends as it would have,
    instead of being killed twice and recorded as an env_error."""
    agent = AgentConfig("outage", factory="tests.eval_agents:ServerOutage",
                        kwargs={"marker": str(tmp_path / "outages"), "wait_s": 6.0})
    evaluate_chains(agent, num_chains=1, ep_len=5, workers=1, job_timeout_s=5, output_dir=tmp_path / "out")
    record = json.loads((tmp_path / "out" / "results.jsonl").read_text())
    assert len((tmp_path / "outages").read_text().splitlines()) == 2
    assert record["attempts"] == 1 and record["subtasks"][0]["reason"] == "timeout"  # the agent held still: ran 5 steps


def test_a_chain_that_loses_the_agents_server_every_time_is_recorded_and_the_evaluation_goes_on(tmp_path):
    """A server that goes away whenever one chain runs (a chain that runs it out of memory) was waited for and
    the chain run again forever: the third outage records the chain as agent_error, and the next chain runs."""
    from harness.eval.runner import MAX_OUTAGES

    agent = AgentConfig("outage", factory="tests.eval_agents:ServerOutage",
                        kwargs={"marker": str(tmp_path / "outages"), "outages": 100, "wait_s": 0.0})
    evaluate_chains(agent, num_chains=2, ep_len=5, workers=0, output_dir=tmp_path / "out")
    records = [json.loads(line) for line in (tmp_path / "out" / "results.jsonl").read_text().splitlines()]
    assert len(records) == 2 and len((tmp_path / "outages").read_text().splitlines()) == 2 * MAX_OUTAGES
    for record in records:
        assert record["attempts"] == 1 and record["completed"] == 0  # not "run again after an env error"
        assert record["subtasks"][0]["reason"] == "agent_error"
        assert f"went away {MAX_OUTAGES} times while this chain ran" in record["subtasks"][0]["message"]


def test_a_chain_that_kills_two_workers_after_a_success_keeps_it(tmp_path, baseline):
    """The record of a chain whose worker died twice said it failed its first subtask, also when the worker died
    in the second: the successes before are kept now (the worker reports each finished subtask), as after an env
    that raised twice."""
    first = baseline[BAD]["subtasks"][0]
    assert first["success"] and baseline[BAD]["subtasks"][1]["steps"] > 3  # dies inside the second subtask
    env = flaky(tmp_path, "kill", None)
    env = EnvConfig(factory=env.factory, options={**env.options, "fail_step": first["steps"] + 3})
    bad = run(tmp_path / "out", env)[BAD]
    assert bad["completed"] == 1 and bad["subtasks"][0] == first
    assert [s["reason"] for s in bad["subtasks"]] == ["success", "env_error"]
    assert "died twice" in bad["subtasks"][1]["message"]
    assert bad["subtasks"][1]["task"] == baseline[BAD]["subtasks"][1]["task"]


def test_a_crash_record_is_of_the_job_as_it_ran():
    """A single-task episode whose setup was redrawn ran another start and setup than it was handed out with:
    its record (when the worker died twice after reporting the episode) says what ran, as an env failure's does."""
    from dataclasses import replace

    from harness.eval.jobs import single_task_jobs
    from harness.eval.rollout import SubtaskOutcome
    from harness.eval.runner import crash_record

    handed_out = single_task_jobs(["place_in_slider"], 1)[0]
    ran = replace(handed_out, condition={**handed_out.condition, "redrawn": 1}, setup=("lift_red_block_table",))
    done = [SubtaskOutcome("place_in_slider", True, 40, "success")]
    record = crash_record(handed_out, "died twice (exit code -9)", done, ran)
    assert record["condition"] == ran.condition and record["setup"] == ["lift_red_block_table"]
    assert record["completed"] == 1 and [s["reason"] for s in record["subtasks"]] == ["success"]  # nothing left to fail
    assert crash_record(handed_out, "died twice", [], None)["condition"] == handed_out.condition
