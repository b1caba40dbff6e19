"""The smoke evaluation CI runs (a few chains, videos on): every report file exists and is valid. Videos
re-rendered from recorded states show what the run saw, with the overlays drawn on."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

from harness.envs import make_env
from harness.eval import AgentConfig, evaluate_chains
from harness.eval.results import calvin_printout
from harness.eval.stats import bootstrap_mean, wilson
from harness.eval.specs import EnvConfig
from harness.eval.video import (
    EXECUTED_COLOR,
    PLAN_COLOR,
    TEXT_BAND,
    FrameDrawer,
    TraceStore,
    VideoSettings,
    render_videos,
    write_video,
)
from harness.sim.layout import NEUTRAL_TCP_POS

ROOT = Path(__file__).resolve().parents[1]


VIDEOS = ["videos/chain_0000.mp4", "videos/chain_0001.mp4", "videos/fail_chain_0002_s1_lift_pink_block_slider_timeout.mp4"]


def evaluate(out: Path) -> None:
    cmd = [sys.executable, "-m", "harness.eval", "agent=custom", "agent.factory=tests.eval_agents:make_button_presser",
           "num_chains=3", "ep_len=25", "workers=2", "videos=2", "video_failures=2", "video_stride=2",
           f"output_dir={out}", "progress=false"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (out / "console.txt").write_text(proc.stdout)  # kept beside the reports for the printout test


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("smoke")
    evaluate(out)
    return out


def test_results_json_has_calvins_keys_and_ours(smoke):
    results = json.loads((smoke / "results.json").read_text())
    assert set(results["chain_sr"]) == {"1", "2", "3", "4", "5"} and results["avg_seq_len"] == pytest.approx(1 / 3)
    assert results["task_info"]["turn_off_led"] == {"success": 1, "total": 1}
    assert results["env"]["backend"] == "builtin" and results["env"]["scene"] == "D" and results["env"]["renderer"] == "none"
    assert results["agent"]["name"] == "button_presser" and results["agent"]["action_type"] == "absolute"
    assert set(results["failure_reasons"]) == {"timeout", "invalid_action", "agent_error", "env_error"}
    assert {"total_s", "rollout_s", "video_s", "jobs_per_min"} <= set(results["timings"])
    assert results["config"]["num_chains"] == 3 and (smoke / "config.yaml").exists()
    assert results["videos"] == VIDEOS


def test_intervals_in_results_printout_and_report(smoke):
    results = json.loads((smoke / "results.json").read_text())
    intervals = results["intervals"]
    assert intervals["chain_sr"]["1"] == wilson(1, 3).to_dict() and intervals["chain_sr"]["2"] == wilson(0, 3).to_dict()
    assert intervals["task_info"]["turn_off_led"] == wilson(1, 1).to_dict()
    completed = [json.loads(line)["completed"] for line in (smoke / "results.jsonl").read_text().splitlines()]
    assert intervals["avg_seq_len"] == bootstrap_mean(completed).to_dict()
    # CALVIN's lines exactly as CALVIN prints them, then the intervals of the same numbers
    console = (smoke / "console.txt").read_text()
    low, high = intervals["avg_seq_len"]["low"], intervals["avg_seq_len"]["high"]
    assert (calvin_printout(results) + "\n\n95 % CIs, 3 chains.") in console
    assert f"Average successful sequence length: 0.333 [{low:.3f}, {high:.3f}]" in console
    assert "1: 33.3% [6.1%, 79.2%]" in console and "turn_off_led: 1 / 1 [20.7%, 100.0%]" in console
    report = (smoke / "report.md").read_text()
    assert f"| 95 % CI | | | [6.1%, 79.2%] | [0.0%, 56.1%] | [0.0%, 56.1%] | [0.0%, 56.1%] | [0.0%, 56.1%] | [{low:.2f}, {high:.2f}] |" in report
    assert "| turn_off_led | 1 | 1 | 100.0% | [20.7%, 100.0%] |" in report


def test_report_and_plots(smoke):
    report = (smoke / "report.md").read_text()
    assert "| agent | env | chains | 1 | 2 | 3 | 4 | 5 | Avg. Len. |" in report
    assert "| button_presser | builtin D | 3 | 33.3% | 0.0% | 0.0% | 0.0% | 0.0% | 0.33 |" in report
    assert "turn_off_led: 1 / 1 |  SR: 100.0%" in report and "(videos/chain_0000.mp4)" in report
    assert "| 1 | 1 | 3 | 33.3% | [6.1%, 79.2%] |" in report and "| 2 | 0 | 1 | 0.0% | [0.0%, 79.3%] |" in report
    assert "| 3 | 0 | 0 | - | - |" in report
    assert "| turn_off_led | 1 | 1 | 100.0% | [20.7%, 100.0%] | 1/1 | 0/0 |" in report
    for name in ("chain_success.png", "task_success.png"):
        with Image.open(smoke / name) as image:
            image.verify()
        with Image.open(smoke / name) as image:
            assert image.size[0] > 300 and np.asarray(image.convert("L")).std() > 10


def test_videos_have_one_frame_per_recorded_step(smoke):
    records = {json.loads(line)["index"]: json.loads(line) for line in (smoke / "results.jsonl").read_text().splitlines()}

    def frames(steps: int, stride: int = 2) -> int:
        return len(range(0, steps, stride)) + 1

    for index, name in ((0, "chain_0000"), (1, "chain_0001")):
        video = iio.imread(smoke / "videos" / f"{name}.mp4")
        assert video.shape[1:] == (400 + 2 * TEXT_BAND, 400, 3)
        assert len(video) == sum(frames(s["steps"]) for s in records[index]["subtasks"])
        assert video[:, TEXT_BAND:-TEXT_BAND].std() > 20  # a scene, not a blank
    failure = iio.imread(smoke / "videos" / "fail_chain_0002_s1_lift_pink_block_slider_timeout.mp4")
    assert len(failure) == frames(records[2]["subtasks"][-1]["steps"])
    assert not list((smoke / "videos").glob("fail_chain_0001*"))  # chain 1 already has its whole-chain video


def test_the_videos_are_rendered_while_the_rollouts_run(smoke):
    timings = json.loads((smoke / "results.json").read_text())["timings"]
    assert timings["videos_during_rollouts"] == 3 and timings["video_during_rollouts_s"] > 0
    assert {"chains_s", "rollout_s", "video_s"} <= set(timings)


def test_in_this_process_the_videos_are_rendered_between_the_jobs(smoke, tmp_path):
    presser = AgentConfig("button_presser", factory="tests.eval_agents:make_button_presser")
    results = evaluate_chains(presser, num_chains=3, ep_len=25, workers=0, output_dir=tmp_path, videos=2,
                              video_failures=2, video_stride=2)
    assert results["videos"] == VIDEOS and results["timings"]["videos_during_rollouts"] == 3
    here, in_the_pool = frames_of(tmp_path / "videos"), frames_of(smoke / "videos")
    assert all(np.array_equal(here[name], in_the_pool[name]) for name in in_the_pool)


def frames_of(folder: Path) -> dict[str, np.ndarray]:
    return {p.name: iio.imread(p) for p in sorted(folder.glob("*.mp4"))}


def test_videos_made_during_the_run_are_frame_for_frame_those_of_one_renderer_afterwards(smoke, tmp_path):
    """What the evaluation did before it rendered in the workers: every video in this process, after the run."""
    selected = TraceStore(smoke / "traces", video_chains=2, video_failures=2).selected()
    render_videos(selected, tmp_path, EnvConfig(scene="D"), VideoSettings(ep_len=25, stride=2))
    serial, parallel = frames_of(tmp_path), frames_of(smoke / "videos")
    assert list(serial) == list(parallel) == [Path(v).name for v in VIDEOS]
    for name in serial:
        assert np.array_equal(serial[name], parallel[name]), name


def test_a_rerun_renders_the_videos_a_kill_left_unwritten(smoke, tmp_path):
    out = tmp_path / "killed"
    shutil.copytree(smoke, out)
    for name in ("chain_0001.mp4", "fail_chain_0002_s1_lift_pink_block_slider_timeout.mp4"):
        (out / "videos" / name).unlink()
    (out / "videos" / ".chain_0001.4242.partial.mp4").write_bytes(b"\x00\x00\x00\x18ftypisom")  # cut short mid-write
    evaluate(out)
    assert json.loads((out / "results.json").read_text())["videos"] == VIDEOS
    assert sorted(p.name for p in (out / "videos").iterdir()) == sorted(Path(v).name for v in VIDEOS)
    again, first = frames_of(out / "videos"), frames_of(smoke / "videos")
    assert all(np.array_equal(again[name], first[name]) for name in first)


@pytest.mark.parametrize("fmt", ["mp4", "gif"])
def test_a_video_cut_short_leaves_nothing_that_looks_finished(tmp_path, fmt):
    def frames():
        for k in range(3):
            yield np.full((32, 32, 3), 40 * k, np.uint8)
        raise KeyboardInterrupt  # the evaluation is stopped while it writes

    with pytest.raises(KeyboardInterrupt):
        write_video(tmp_path / "chain_0000", frames(), fps=30, fmt=fmt)
    assert list(tmp_path.iterdir()) == []


def test_rerendered_frames_are_the_frames_the_run_saw():
    with make_env("builtin", scene="D", cameras=("static",)) as live, make_env("builtin", scene="D", cameras=("static",)) as replay:
        live.reset()
        rng = np.random.default_rng(0)
        for _ in range(15):
            obs, *_ = live.step(np.r_[rng.uniform(-1, 1, 6), 1.0])
        again = replay.reset(robot_obs=obs["robot_obs"], scene_obs=obs["scene_obs"])
        diff = np.abs(again["rgb_obs"]["rgb_static"].astype(int) - obs["rgb_obs"]["rgb_static"].astype(int))
        assert diff.mean() < 0.5 and (diff > 40).mean() < 0.002


def test_overlay_draws_paths_and_text():
    drawer = FrameDrawer(200, scale=2)
    tcp = np.array(NEUTRAL_TCP_POS)
    executed = np.stack([tcp + [0.01 * i, 0, 0] for i in range(10)])
    plan = executed[-1] + np.array([[0, 0.05, 0], [0, 0.1, 0], [0, 0.15, -0.05]])
    frame = drawer.draw(np.full((200, 200, 3), 90, np.uint8), "open the drawer", executed, plan, "chain_0000 1/5")
    assert frame.shape == (444, 400, 3)

    def near(color, uv) -> bool:
        u, v = int(round(uv[0])), int(round(uv[1])) + TEXT_BAND
        patch = frame[v - 3 : v + 4, u - 3 : u + 4].reshape(-1, 3)
        return bool((np.abs(patch.astype(int) - color).sum(axis=1) < 30).any())

    assert near(PLAN_COLOR, drawer.pixels(plan[-1:])[0])
    assert near(EXECUTED_COLOR, drawer.pixels(executed[3:4])[0])
    assert frame[:TEXT_BAND].max() == 255 and frame[-TEXT_BAND:].max() == 255  # instruction and footer text
    assert not near(PLAN_COLOR, drawer.pixels(executed[:1])[0])
