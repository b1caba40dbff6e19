"""The robustness suite (harness/eval/robust.py) and the rollout's axes (latency, language)."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import numpy as np
import pytest

from agents.replay import ReplayAgent
from harness.config_errors import ConfigError
from harness.envs.perturbations import Perturbations
from harness.eval import AgentConfig, EnvConfig
from harness.eval.config import EvalSettings
from harness.eval.evaluation import run_evaluation
from harness.eval.jobs import chain_jobs
from harness.eval.robust import SuiteSettings, run_suite
from harness.eval.rollout import run_chain
from harness.tasks import eval_instruction
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
    # with fewer chains, every row reports that prefix: its avg. len and its drop over the same chains (the drop
    # was over every recorded chain, beside an avg. len of the prefix)
    prefix = run_suite(replace(SETTINGS, num_chains=1), EnvConfig(), agent, suite, tmp_path / "suite")
    assert all(r["chains"] == 1 for r in prefix) and all(r["paired"] == 1 for r in prefix[1:])
    noise = next(r for r in prefix if r["axis"] == "action_noise")
    assert noise["drop"] == pytest.approx(prefix[0]["avg_len"] - noise["avg_len"])
    assert "| p | paired |" in (tmp_path / "suite" / "robustness.md").read_text()


def test_single_task_mode_is_refused_before_any_row_runs(tmp_path):
    """The suite's table is avg. len and paired drops over chains: single-task episodes were run row after row and
    then failed at the table (KeyError 'avg_seq_len'); now the mode is refused before anything runs."""
    settings = replace(SETTINGS, mode="single_task", tasks=("open_drawer",), episodes_per_task=1)
    with pytest.raises(ConfigError, match="mode=single_task: the robustness suite runs CALVIN's chains"):
        run_suite(settings, EnvConfig(), AgentConfig("scripted"), SuiteSettings(axes=("language",)), tmp_path / "suite")
    assert not (tmp_path / "suite").exists()


def test_the_command_line_names_a_bad_axis(tmp_path):
    import subprocess
    import sys

    run = subprocess.run([sys.executable, "-m", "harness.eval.robust", "suite.axes=[camera,fog]", f"output_dir={tmp_path}"],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "suite.axes: unknown axes ['fog']" in run.stderr, run.stderr
    assert not any(tmp_path.iterdir())
    # a row the scene cannot run is a configuration error too, before any row runs (it was a traceback)
    run = subprocess.run([sys.executable, "-m", "harness.eval.robust", "suite.axes=[distractors]", "env.scene=A",
                          f"output_dir={tmp_path}"], capture_output=True, text=True, timeout=120)
    assert run.returncode == 2 and "suite.axes: the distractors row cannot run" in run.stderr, run.stderr
    assert "Traceback" not in run.stderr and not any(tmp_path.iterdir())
    for levels, message in (([], "suite.levels: empty"), ([1, 1], "suite.levels: each level once")):
        with pytest.raises(ValueError, match=message):
            SuiteSettings(axes=("camera",), levels=levels)


class RawFrames:
    """A FrameDrawer that keeps the camera image each video frame is drawn from."""

    def __init__(self) -> None:
        self.images: list[np.ndarray] = []

    def draw(self, rgb, *args, **kwargs):
        self.images.append(rgb)
        return rgb


def perturbed_chain(perturb: Perturbations, seed: int, steps: int = 6):
    """What a policy reading both cameras saw of the static one along a few steps of a perturbed chain, and
    the trace of it."""
    from harness.eval.rollout import SubtaskTrace
    from harness.tasks import initial_state

    job = chain_jobs(1)[0]
    env = EnvConfig(perturb=perturb).build(cameras=("static", "gripper"))
    env.new_chain(seed)
    obs = env.reset(*initial_state(job.condition, "D"))
    trace, seen = SubtaskTrace(job.tasks[0], "instruction"), []
    for k in range(steps + 1):
        trace.add(obs, None)
        seen.append(obs["rgb_obs"]["rgb_static"])
        if k < steps:
            obs = env.step(np.array([0.8, 0.3, -0.2, 0.0, 0.0, 0.1, 1.0]))[0]
    env.close()
    meta = {"key": job.key, "index": job.index, "seed": seed, "tasks": list(job.tasks), "full": True,
            "subtasks": [{"task": trace.task, "instruction": trace.instruction}],
            "outcomes": [{"task": trace.task, "success": False, "reason": "timeout"}]}
    return seen, meta, trace


def test_videos_of_a_perturbed_run_show_what_the_policy_saw():
    """The video's frames are drawn from the policy's own images: the chain's camera pose, light, colours,
    texture and blur, redrawn from its seed; noise is drawn anew (the same amount, other pixels: the video
    renders one camera where the policy had two)."""
    from harness.eval.video import VideoRenderer, _frames

    visual = Perturbations(camera=3, light=2, color=2, texture=2, blur=1)
    seen, meta, trace = perturbed_chain(replace(visual, start_pose=1, action_noise=1), seed=7)
    renderer = VideoRenderer(EnvConfig(perturb=replace(visual, start_pose=1, action_noise=1)))
    assert renderer.env_cfg.perturb == visual  # the rest is in the recorded states
    frames = RawFrames()
    list(_frames(renderer.chain_env(meta), frames, meta, [trace], ep_len=360, stride=1))
    assert len(frames.images) == len(seen)
    for frame, image in zip(frames.images, seen):
        np.testing.assert_array_equal(frame, image)
    assert renderer.env.cameras.static_view != VideoRenderer(EnvConfig()).chain_env(meta).cameras.static_view
    renderer.close()
    noisy = Perturbations(image_noise=1)  # std 4: two independent draws differ by ~1.13 * 4 on average
    seen, meta, trace = perturbed_chain(noisy, seed=7, steps=2)
    renderer, frames = VideoRenderer(EnvConfig(perturb=noisy)), RawFrames()
    list(_frames(renderer.chain_env(meta), frames, meta, [trace], ep_len=360, stride=1))
    renderer.close()
    differences = [np.abs(frame.astype(int) - image).mean() for frame, image in zip(frames.images, seen)]
    assert max(differences) > 0 and all(d < 6 for d in differences), differences


def test_instructions_replace_calvins_for_the_tasks_named(tmp_path):
    """`instructions={task: text}`: the agent is told `text` for that task and CALVIN's instruction for the others;
    the run key and the report's protocol say so (a folder of CALVIN's instructions refuses to resume it); the
    language axis, unknown tasks and empty texts are refused."""
    first, other = (job.tasks[0] for job in chain_jobs(2))  # each chain ends at its failed first subtask
    assert first != other
    settings = replace(SETTINGS, num_chains=2, ep_len=3, instructions={first: "do the first thing"})
    agent = Recorder()
    results = run_evaluation(settings, EnvConfig(), agent, tmp_path / "run", print_summary=False)
    assert agent.instructions == ["do the first thing"] * 3 + [eval_instruction(other)] * 3
    assert "replaced for 1 task(s) (" + f"{first}: 'do the first thing')" in results["protocol"]["instructions"]
    assert json.loads((tmp_path / "run" / "run.json").read_text())["instructions"] == {first: "do the first thing"}
    with pytest.raises(ConfigError, match="differs in: instructions"):
        run_evaluation(replace(settings, instructions={}), EnvConfig(), Recorder(), tmp_path / "run", print_summary=False)
    with pytest.raises(ConfigError, match="instructions and env.perturb.language both reword"):
        run_evaluation(settings, EnvConfig(perturb=Perturbations(language=1)), Recorder(), None, print_summary=False)
    with pytest.raises(ConfigError, match="instructions: the language rows reword"):
        run_suite(settings, EnvConfig(), AgentConfig("scripted"), SuiteSettings(axes=("language",)), tmp_path / "suite")
    with pytest.raises(ValueError, match="instructions: unknown task 'close_the_drawer'"):
        replace(SETTINGS, instructions={"close_the_drawer": "x"})
    with pytest.raises(ValueError, match="instructions: the text for open_drawer must be a non-empty string"):
        replace(SETTINGS, instructions={"open_drawer": " "})


def test_every_row_evaluates_the_model_a_checkpoint_link_named_when_the_suite_began(tmp_path, monkeypatch):
    """A suite of a training's checkpoints/last while the training moves it: each row read the link at its own
    start, so later rows evaluated a newer model and the table called the extra training a perturbation's
    drop. The link is read once now; a row of other weights (a folder from elsewhere) is refused by the table."""
    import os
    import shutil

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    import harness.eval.robust as robust
    from tests.serve_helpers import save_tiny_checkpoint

    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    shutil.copytree(save_tiny_checkpoint(tmp_path / "tiny"), checkpoints / "step_0000001")
    shutil.copytree(checkpoints / "step_0000001", checkpoints / "step_0000002")
    weights_file = checkpoints / "step_0000002" / "model.safetensors"
    with safe_open(str(weights_file), framework="pt") as f:
        metadata = f.metadata()
    save_file({k: v + 1e-3 for k, v in load_file(str(weights_file)).items()}, str(weights_file), metadata=metadata)
    os.symlink("step_0000001", checkpoints / "last")
    evaluated = robust.run_evaluation

    def training_moves_the_link(*args, **kwargs):
        result = evaluated(*args, **kwargs)
        os.replace(_link_to("step_0000002", checkpoints), checkpoints / "last")
        return result

    monkeypatch.setattr(robust, "run_evaluation", training_moves_the_link)
    settings = replace(SETTINGS, num_chains=1, ep_len=4)
    agent = AgentConfig("vla", {"checkpoint": str(checkpoints / "last")})
    run_suite(settings, EnvConfig(), agent, SuiteSettings(axes=("action_noise",), levels=(1,)), tmp_path / "suite")
    keys = [json.loads((tmp_path / "suite" / row / "run.json").read_text()) for row in ("unperturbed", "action_noise_1")]
    assert [k["checkpoint"] for k in keys] == ["step_0000001", "step_0000001"]
    assert keys[0]["weights"] == keys[1]["weights"]

    row = tmp_path / "suite" / "action_noise_1" / "run.json"
    row.write_text(json.dumps({**keys[1], "weights": "0" * 32}))
    with pytest.raises(ValueError, match="evaluated other weights"):
        robust.robustness_table(tmp_path / "suite", SuiteSettings(axes=("action_noise",), levels=(1,)),
                                {job.key for job in settings.jobs()})


def _link_to(target: str, folder) -> str:
    """A new link to `target` beside the one it will replace (a rename swaps it in, as the trainer does)."""
    import os

    path = folder / ".last.new"
    os.symlink(target, path)
    return str(path)
