"""CALVIN's protocol on the real scene: chaining, success, failure reasons, what the agent sees."""

from __future__ import annotations

import json
import re
from contextlib import nullcontext

import numpy as np
import pytest

from agents import AgentSpec
from agents.replay import ReplayAgent
from agents.scripted import ScriptedExpert
from harness.envs import make_env
from harness.config_errors import ConfigError
from harness.envs.builtin import BuiltinEnv
from harness.eval import AgentConfig, evaluate_chains, evaluate_single_tasks, rollout
from harness.eval.jobs import chain_jobs, redrawn, single_task_jobs
from harness.eval.rollout import env_action, run_chain
from harness.tasks import TaskOracle, initial_state, symbolic_state
from tests.eval_agents import ButtonPresser, FlakyEnv

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
    # with failure clips: a reset that raised left a trace without frames, and writing it stopped the evaluation
    results = evaluate_chains(agent, num_chains=3, ep_len=6, output_dir=tmp_path, video_failures=3)
    assert (tmp_path / "report.md").is_file() and len(results["videos"]) == 3
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


class Recorder:
    """Relative no-ops with the gripper closed (so a block the setup left in it stays there), remembering the
    first observation of each subtask (privileged: it sees scene_obs)."""

    def __init__(self) -> None:
        self.spec = AgentSpec(name="recorder", privileged=True)
        self.first: list[dict] = []
        self.fresh = False

    def reset(self) -> None:
        self.fresh = True

    def step(self, obs: dict, instruction: str) -> np.ndarray:
        if self.fresh:
            self.first.append(obs)
        self.fresh = False
        return np.array([0, 0, 0, 0, 0, 0, -1.0])


def test_the_seven_tasks_no_start_condition_allows_start_after_the_experts_setup(env):
    """place_in_slider: the expert lifts a block, and the agent starts with it in the gripper, above the
    table; unstack_block: the expert lifts one block and stacks it on another."""
    for task in ("place_in_slider", "unstack_block"):
        agent, oracle = Recorder(), TaskOracle()
        (job,) = single_task_jobs([task], 1)
        chain = run_chain(env, agent, job, 20, oracle)
        assert chain.job == job and [o.task for o in chain.outcomes] == [task] and chain.outcomes[0].steps == 20
        state = symbolic_state(env.get_info(), "D")
        if task == "place_in_slider":
            (lift,) = job.setup
            color = lift.split("_")[1]
            assert getattr(state, f"{color}_block") == "grasped" and state.grasped == 1
            assert agent.first[0]["robot_obs"][6] < 0.07  # the fingers closed on the block
        else:
            assert {"stacked_top", "stacked_bottom"} <= {state.red_block, state.blue_block, state.pink_block}


def test_the_experts_setup_renders_no_frame_and_the_agent_starts_as_if_it_had(monkeypatch):
    """place_in_slider's setup (the expert lifts a block, ~36 steps) renders nothing; the agent's first frame
    and state are the same as with every setup step rendered (rendering never moves the physics)."""
    (job,) = single_task_jobs(["place_in_slider"], 1)
    firsts, renders = [], []
    with make_env("builtin", scene="D", cameras=("static",), camera_sizes={"static": 64}) as cam_env:
        render = cam_env.cameras.render
        monkeypatch.setattr(cam_env.cameras, "render", lambda *a, **k: renders.append(1) or render(*a, **k))
        for rendered in (False, True):
            if rendered:  # every step renders, as before the setup stopped rendering
                monkeypatch.setattr(BuiltinEnv, "without_cameras", lambda self: nullcontext())
            renders.clear()
            agent = Recorder()
            chain = run_chain(cam_env, agent, job, 3, TaskOracle())
            assert chain.job == job and chain.outcomes[0].steps == 3
            firsts.append((agent.first[0], len(renders)))
    (unrendered, unrendered_frames), (rendered, rendered_frames) = firsts
    assert unrendered_frames == 1 + 1 + 3  # the start, the agent's first frame, its 3 steps
    assert rendered_frames - unrendered_frames > 30  # the expert's setup steps (~36) each rendered a frame
    assert unrendered["rgb_obs"]["rgb_static"].shape == (64, 64, 3)
    for key in ("robot_obs", "scene_obs"):
        np.testing.assert_array_equal(unrendered[key], rendered[key])
    np.testing.assert_array_equal(unrendered["rgb_obs"]["rgb_static"], rendered["rgb_obs"]["rgb_static"])


class FailFirst(ScriptedExpert):
    """The scripted expert, failing the first `fails` setups of the process (a NaN action)."""

    fails = 1

    def step(self, obs, instruction):
        if FailFirst.fails > 0:
            FailFirst.fails -= 1
            return np.array([np.nan, 0, 0, 0, 0, 0, 1.0])
        return super().step(obs, instruction)


def test_a_setup_the_expert_fails_is_drawn_again_and_the_record_says_which(tmp_path, monkeypatch):
    monkeypatch.setattr(rollout, "ScriptedExpert", FailFirst)
    FailFirst.fails = 1
    results = evaluate_single_tasks(AgentConfig("scripted"), output_dir=tmp_path / "once", tasks=["stack_block"],
                                    episodes_per_task=1)
    (job,) = single_task_jobs(["stack_block"], 1)
    (rec,) = [json.loads(line) for line in (tmp_path / "once" / "results.jsonl").read_text().splitlines()]
    again = redrawn(job, 1)
    assert (rec["condition"], rec["setup"]) == (again.condition, list(again.setup)) != (job.condition, list(job.setup))
    assert results["tasks"]["stack_block"]["success"] == 1  # the scripted agent stacks from the redrawn setup

    FailFirst.fails = 10**6
    results = evaluate_single_tasks(AgentConfig("scripted"), output_dir=tmp_path / "never", tasks=["stack_block"],
                                    episodes_per_task=1)
    (rec,) = [json.loads(line) for line in (tmp_path / "never" / "results.jsonl").read_text().splitlines()]
    assert results["failure_reasons"]["env_error"] == 1 and rec["subtasks"][0]["task"] == "stack_block"
    assert f"failed the setup of {rollout.SETUP_DRAWS} starts in a row" in rec["subtasks"][0]["message"]
    assert rec["attempts"] == 1  # the draws come from the episode's seed: a new env would fail them the same way


def test_an_env_failure_during_the_setup_is_the_measured_tasks():
    (job,) = single_task_jobs(["stack_block"], 1)
    _, scene_obs = initial_state(job.condition, "D")
    env = FlakyEnv(list(scene_obs), fail_step=5, scene="D", cameras=())
    try:
        with pytest.raises(rollout.EnvFailure, match="during the setup") as failure:
            run_chain(env, Recorder(), job, 20)
    finally:
        env.close()
    (outcome,) = failure.value.outcomes()
    assert (outcome.task, outcome.reason, failure.value.job) == ("stack_block", "env_error", job)


def test_an_env_failure_in_a_subtask_carries_the_job_as_run():
    """The runner records a chain whose retry failed too with the failure's job: the start and setup the subtask
    ran from (a redrawn single-task start's, not the first draw's)."""
    from harness.eval.rollout import EnvFailure

    job = redrawn(next(j for j in single_task_jobs(["open_drawer"], 1, 0)), 1)
    scene_obs = initial_state(job.condition, "D")[1].tolist()
    env = FlakyEnv(fail_scene_obs=scene_obs, fail_step=2)
    try:
        with pytest.raises(EnvFailure) as failure:
            run_chain(env, ButtonPresser(), job, ep_len=10)
    finally:
        env.close()
    assert failure.value.job == job and failure.value.outcomes()[-1].reason == "env_error"


def test_a_run_resumed_with_fewer_chains_shows_only_their_videos(tmp_path):
    """The failure clips kept for chains beyond num_chains (a run resumed with fewer) were listed in results.json and
    report.md, and rendered, beside the metrics of the prefix."""
    agent = AgentConfig("hold", {"gripper": 1.0}, factory="tests.eval_agents:HoldStill")
    first = evaluate_chains(agent, num_chains=3, ep_len=4, output_dir=tmp_path, video_failures=3)
    assert len(first["videos"]) == 3
    prefix = evaluate_chains(agent, num_chains=1, ep_len=4, output_dir=tmp_path, video_failures=3)
    assert len(prefix["videos"]) == 1 and "chain_0000" in prefix["videos"][0]



def test_a_run_resumed_on_another_simulator_is_refused(tmp_path):
    """The run key names the env's settings, not the simulator that ran them: results measured on one version
    (calvin_env at one commit) and resumed on another would be one result of two simulators."""
    agent = AgentConfig("hold", {"gripper": 1.0}, factory="tests.eval_agents:HoldStill")
    evaluate_chains(agent, num_chains=1, ep_len=2, output_dir=tmp_path)
    saved = json.loads((tmp_path / "description.json").read_text())
    version = saved["env"]["version"]
    saved["env"]["version"] = "calvin_env 1431a46"
    (tmp_path / "description.json").write_text(json.dumps(saved))
    with pytest.raises(ConfigError, match=f"holds results measured on 'calvin_env 1431a46'; this run's env is '{version}'"):
        evaluate_chains(agent, num_chains=2, ep_len=2, output_dir=tmp_path)
    assert len((tmp_path / "results.jsonl").read_text().splitlines()) == 1  # nothing added
    assert evaluate_chains(agent, num_chains=2, ep_len=2, output_dir=tmp_path, overwrite=True)["num_chains"] == 2


def test_an_evaluation_in_the_callers_process_leaves_its_random_streams_as_they_were():
    """workers=0 from a training loop: the evaluation seeds the global RNGs for its chains, and gives the caller
    back Python's, numpy's and torch's streams where they were (CUDA's too, where the process uses it)."""
    import random

    import torch

    from harness.eval.rollout import preserved_global_rngs, seed_everything

    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    with preserved_global_rngs():
        seed_everything(12345)
        random.random(), np.random.rand(), torch.rand(1)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected
