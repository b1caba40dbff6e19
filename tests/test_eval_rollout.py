"""CALVIN's protocol on the real scene: chaining, success, failure reasons, what the agent sees."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from agents.replay import ReplayAgent
from harness.envs import make_env
from harness.eval import AgentConfig, evaluate_chains, evaluate_single_tasks
from harness.eval.jobs import chain_jobs
from harness.eval.rollout import env_action, run_chain
from tests.eval_agents import ButtonPresser

PRESSER = AgentConfig("button_presser", factory="tests.eval_agents:make_button_presser")


@pytest.fixture(scope="module")
def env():
    e = make_env("builtin", scene="D", cameras=())
    yield e
    e.close()


@pytest.mark.parametrize(
    "what, reason, message",
    [("nan", "invalid_action", "finite"), ("shape", "invalid_action", r"shape \(6,\)"),
     ("gripper", "invalid_action", "gripper"), ("raise", "agent_error", "step failed on purpose"),
     ("reset_raise", "agent_error", "reset failed on purpose")],
)
def test_a_misbehaving_agent_fails_its_subtask_and_the_evaluation_goes_on(tmp_path, what, reason, message):
    agent = AgentConfig("misbehaving", {"what": what, "bad_seed": 1}, factory="tests.eval_agents:Misbehaving")
    results = evaluate_chains(agent, num_chains=3, ep_len=6, output_dir=tmp_path)
    lines = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    by_index = {r["index"]: r for r in lines}
    assert sorted(by_index) == [0, 1, 2]
    assert by_index[1]["subtasks"][0]["reason"] == reason and by_index[1]["subtasks"][0]["steps"] == 0
    assert re.search(message, by_index[1]["subtasks"][0]["message"])
    # the other chains ran normally (and the unprivileged agent never saw scene_obs, or it would have raised)
    assert by_index[0]["subtasks"] == [{"task": by_index[0]["tasks"][0], "success": False, "steps": 6, "reason": "timeout",
                                        "message": "", "out_of_range": 0}]
    assert by_index[2]["subtasks"][0]["reason"] == "timeout"
    assert results["failure_reasons"] == {"timeout": 2, "invalid_action": int(reason == "invalid_action"),
                                          "agent_error": int(reason == "agent_error"), "env_error": 0}


def test_success_ends_the_subtask_and_the_chain_goes_on(env):
    job = chain_jobs(2)[1]  # turn_off_led first
    assert job.tasks[0] == "turn_off_led"
    run = run_chain(env, ButtonPresser(), job, ep_len=40, record=True)
    first, second = run.outcomes
    assert first.success and first.reason == "success" and 12 < first.steps < 40
    assert not second.success and second.reason == "timeout" and second.steps == 40 and second.task == job.tasks[1]
    # one trace per subtask, frame 0 is the start; the planned path is kept per frame
    assert [len(t.robot_obs) for t in run.traces] == [first.steps + 1, 41]
    assert run.traces[0].plans[0].shape == (2, 3)
    assert run.traces[0].scene_obs[0][5] == 1 and run.traces[0].scene_obs[-1][5] == 0  # the LED went off


class _StubOracle:
    """Reports success at the 2nd step of the first two subtasks: tests the chaining, not the predicates."""

    def __init__(self, tasks):
        self.tasks, self.calls, self.starts = tasks, {}, []

    def is_completed(self, task, start, info):
        if not self.starts or self.starts[-1][0] != task:
            self.starts.append((task, start))
        self.calls[task] = self.calls.get(task, 0) + 1
        return task in self.tasks[:2] and self.calls[task] == 2


def test_chaining_uses_the_state_at_each_subtask_start(env):
    job = chain_jobs(1)[0]
    oracle = _StubOracle(job.tasks)
    run = run_chain(env, ReplayAgent(np.tile([0.5, 0, 0, 0, 0, 0, 1.0], (20, 1))), job, ep_len=5, oracle=oracle)
    assert [(o.task, o.success, o.steps, o.reason) for o in run.outcomes] == [
        (job.tasks[0], True, 2, "success"), (job.tasks[1], True, 2, "success"), (job.tasks[2], False, 5, "timeout")]
    # each subtask's start info is read afresh at its start: the TCP moved +x between the starts
    xs = [start.raw["robot_info"]["tcp_pos"][0] for _, start in oracle.starts]
    assert len(xs) == 3 and xs[0] < xs[1] - 0.01 < xs[2] - 0.02


def test_out_of_range_relative_actions_are_counted(env):
    actions = np.zeros((6, 7))
    actions[:, 6] = 1
    actions[1, 0], actions[4, 5] = 1.5, -1.01
    run = run_chain(env, ReplayAgent(actions), chain_jobs(1)[0], ep_len=6)
    assert run.outcomes[0].out_of_range == 2 and run.outcomes[0].steps == 6


def test_env_action_forms():
    rel, outside = env_action([0, 0, 0, 0, 0, 0, -1], "relative")
    assert rel.shape == (7,) and not outside
    assert env_action(np.r_[np.zeros(5), 2.0, 1.0], "relative")[1]
    absolute, outside = env_action(np.r_[0.1, 0.2, 0.5, 3.1, 0, 1.5, 1], "absolute")
    assert absolute["type"] == "cartesian_abs" and not outside
    assert env_action(([0.1, 0.2, 0.5], [3.1, 0, 1.5], -1), "absolute")[0][2] == -1
    for bad in ([0] * 8, [[0] * 7], "left", None, [0, 0, 0, 0, 0, 0, 0]):
        with pytest.raises(ValueError):
            env_action(bad, "relative")


def test_single_task_mode():
    results = evaluate_single_tasks(PRESSER, tasks=["turn_on_led", "turn_off_led", "open_drawer"], episodes_per_task=2, ep_len=30)
    assert results["tasks"]["turn_on_led"] == {"success": 2, "total": 2, "rate": 1.0}
    assert results["tasks"]["turn_off_led"] == {"success": 2, "total": 2, "rate": 1.0}
    assert results["tasks"]["open_drawer"] == {"success": 0, "total": 2, "rate": 0.0}
    assert results["success_rate"] == pytest.approx(4 / 6) and results["failure_reasons"]["timeout"] == 2


def test_single_task_mode_with_a_live_agent_in_process():
    agent = ButtonPresser()
    results = evaluate_single_tasks(agent, tasks=["turn_on_led"], episodes_per_task=1, ep_len=30)
    assert results["tasks"]["turn_on_led"]["success"] == 1 and results["agent"]["name"] == "button_presser"
    with pytest.raises(ValueError, match="in-process"):
        evaluate_single_tasks(agent, tasks=["turn_on_led"], episodes_per_task=1, ep_len=30, workers=1)


def test_worker_processes_need_a_picklable_agent():
    with pytest.raises(ValueError, match="picklable"):
        evaluate_single_tasks(lambda: ButtonPresser(), tasks=["turn_on_led"], episodes_per_task=1, ep_len=5, workers=1)


def test_an_in_process_evaluation_leaves_the_callers_random_streams_alone():
    import random

    random.seed(5)
    np.random.seed(5)
    expected = (random.random(), np.random.rand())
    random.seed(5)
    np.random.seed(5)
    evaluate_single_tasks(AgentConfig("random"), tasks=["turn_on_led"], episodes_per_task=2, ep_len=3)
    assert (random.random(), np.random.rand()) == expected
