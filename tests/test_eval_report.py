"""The smoke evaluation CI runs (a few chains, videos on): every report file exists and is valid. Videos
re-rendered from recorded states show what the run saw, with the overlays drawn on."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
from PIL import Image

from harness.envs import make_env
from harness.eval.video import EXECUTED_COLOR, PLAN_COLOR, TEXT_BAND, FrameDrawer
from harness.sim.layout import NEUTRAL_TCP_POS

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("smoke")
    cmd = [sys.executable, "-m", "harness.eval", "agent=custom", "agent.factory=tests.eval_agents:make_button_presser",
           "num_chains=3", "ep_len=25", "workers=2", "videos=2", "video_failures=2", "video_stride=2",
           f"output_dir={out}", "progress=false"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
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
    assert results["videos"] == ["videos/chain_0000.mp4", "videos/chain_0001.mp4",
                                 "videos/fail_chain_0002_s1_lift_pink_block_slider_timeout.mp4"]


def test_report_and_plots(smoke):
    report = (smoke / "report.md").read_text()
    assert "| agent | env | chains | 1 | 2 | 3 | 4 | 5 | Avg. Len. |" in report
    assert "| button_presser | builtin D | 3 | 33.3% | 0.0% | 0.0% | 0.0% | 0.0% | 0.33 |" in report
    assert "turn_off_led: 1 / 1 |  SR: 100.0%" in report and "(videos/chain_0000.mp4)" in report
    assert "| 1 | 1 | 3 | 33.3% |" in report and "| 2 | 0 | 1 | 0.0% |" in report and "| 3 | 0 | 0 | - |" in report
    assert "| turn_off_led | 1 | 1 | 100.0% | 1/1 | 0/0 |" in report
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
