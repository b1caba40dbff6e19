"""The robustness suite (harness/eval/robust.py) and the rollout's axes (latency, language)."""

from __future__ import annotations

import csv
import json

import numpy as np

from agents.replay import ReplayAgent
from harness.envs.perturbations import Perturbations
from harness.eval import AgentConfig, EnvConfig
from harness.eval.config import EvalSettings
from harness.eval.evaluation import run_evaluation
from harness.eval.jobs import chain_jobs
from harness.eval.robust import SuiteSettings, run_suite
from harness.eval.rollout import run_chain
from harness.tasks.paraphrases import heldout_instructions

SETTINGS = EvalSettings(num_chains=2, ep_len=40, workers=0, videos=0, video_failures=0, progress=False)


class Recorder(ReplayAgent):
    """Replays a fixed action and keeps what it was shown."""

    def __init__(self) -> None:
        super().__init__(np.tile([0.8, 0.3, 0.0, 0.0, 0.0, 0.0, 1.0], (100, 1)))
        self.seen: list[np.ndarray] = []
        self.instructions: list[str] = []

    def step(self, obs, instruction):
        self.seen.append(np.array(obs["robot_obs"]))
        self.instructions.append(instruction)
        return super().step(obs, instruction)


def chain_run(perturb: Perturbations) -> tuple[Recorder, list[np.ndarray]]:
    """Chain 0 for 6 steps a subtask; the agent's view, and the robot_obs the env had before each step."""
    env = EnvConfig(perturb=perturb).build(cameras=())
    agent = Recorder()
    run = run_chain(env, agent, chain_jobs(1)[0], ep_len=6, record=True)
    env.close()
    return agent, [o for t in run.traces for o in t.robot_obs[:-1]]


def test_latency_shows_the_policy_observations_k_steps_old():
    plain, states = chain_run(Perturbations())
    late, late_states = chain_run(Perturbations(latency=2))  # 2 steps old
    for a, b in zip(late_states, states):  # the same actions: the same trajectory
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(np.array(plain.seen), np.array(states))
    expected = [states[0], states[0]] + states[:-2]  # the first observation until one is old enough
    np.testing.assert_array_equal(np.array(late.seen), np.array(expected))


def test_language_rewords_the_instruction_per_chain_seed():
    plain, _ = chain_run(Perturbations())
    reworded, _ = chain_run(Perturbations(language=1))
    again, _ = chain_run(Perturbations(language=1))
    task = chain_jobs(1)[0].tasks[0]
    assert set(reworded.instructions) <= set(heldout_instructions()[task])
    assert reworded.instructions == again.instructions and reworded.instructions != plain.instructions


def records(folder):
    out = {}
    for line in (folder / "results.jsonl").read_text().splitlines():
        r = json.loads(line)
        out[r["key"]] = {k: v for k, v in r.items() if k not in ("wall_s", "cpu_s")}
    return out


def test_the_suite_pairs_its_rows_with_a_plain_evaluation(tmp_path):
    agent = AgentConfig("scripted")
    suite = SuiteSettings(axes=("camera", "action_noise"), levels=(1,))
    table = run_suite(SETTINGS, EnvConfig(), agent, suite, tmp_path / "suite")
    plain = tmp_path / "plain"
    run_evaluation(SETTINGS, EnvConfig(), agent, plain, print_summary=False)
    # the unperturbed row is a plain evaluation of the same chains, to the bit (final-state digests included)
    assert records(tmp_path / "suite" / "unperturbed") == records(plain)
    assert json.loads((tmp_path / "suite" / "unperturbed" / "run.json").read_text()) == json.loads((plain / "run.json").read_text())
    rows = {(r["axis"], r["level"]): r for r in table}
    assert list(rows) == [("unperturbed", 0), ("camera", 1), ("action_noise", 1)]
    # the expert plans from state and renders nothing: the camera cannot move it
    camera = records(tmp_path / "suite" / "camera_1")
    assert [r["final_state"] for r in camera.values()] == [r["final_state"] for r in records(plain).values()]
    assert rows[("camera", 1)]["drop"] == 0 and rows[("camera", 1)]["paired"] == 2
    # action noise moves the arm: another end state
    noisy = records(tmp_path / "suite" / "action_noise_1")
    assert [r["final_state"] for r in noisy.values()] != [r["final_state"] for r in records(plain).values()]
    described = json.loads((tmp_path / "suite" / "action_noise_1" / "results.json").read_text())["env"]
    assert described["perturbations"] == {"action_noise": {"level": 1, "amount": "0.1 std"}}
    with open(tmp_path / "suite" / "robustness.csv") as f:
        assert [(r["axis"], r["level"]) for r in csv.DictReader(f)] == [("unperturbed", "0"), ("camera", "1"), ("action_noise", "1")]
    assert (tmp_path / "suite" / "robustness.png").stat().st_size > 0
    # the same command again resumes: nothing is run again, the table is the same
    again = run_suite(SETTINGS, EnvConfig(), agent, suite, tmp_path / "suite")
    assert again == table
    assert json.loads((tmp_path / "suite" / "camera_1" / "results.json").read_text())["timings"]["jobs_run_now"] == 0


def test_the_command_line_names_a_bad_axis(tmp_path):
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "harness.eval.robust", "suite.axes=[camera,fog]", f"output_dir={tmp_path}"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "suite.axes: unknown axes ['fog']" in run.stderr, run.stderr
    assert not any(tmp_path.iterdir())


def test_videos_of_a_perturbed_run_use_the_unperturbed_camera(tmp_path):
    """The drawn TCP path is projected with the default static camera: the picture must be that camera's."""
    from harness.eval.video import VideoRenderer

    renderer = VideoRenderer(EnvConfig(perturb=Perturbations(camera=3, blur=2, start_pose=1)))
    assert not renderer.env_cfg.perturb.any()
