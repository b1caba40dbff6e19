"""`python -m harness.eval` end to end: resume after SIGKILL (videos too), torchrun with 2 CPU ranks, the same numbers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest

from harness.eval.specs import EnvConfig
from harness.eval.video import TraceStore, VideoSettings, render_videos

ROOT = Path(__file__).resolve().parents[1]
NUM_CHAINS = 24
ARGS = ["agent=custom", "agent.factory=tests.eval_agents:make_button_presser", f"num_chains={NUM_CHAINS}",
        "ep_len=50", "videos=0", "video_failures=0", "progress=false"]
NUMBERS = ("avg_seq_len", "chain_sr", "task_info", "failure_reasons", "actions", "num_chains")


def command(out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "harness.eval", *ARGS, f"output_dir={out}", *extra]


def run(cmd: list[str], timeout: float = 240) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def records(out: Path) -> dict[str, tuple]:
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(lines) == len({r["key"] for r in lines}), "a chain was recorded twice"
    return {r["key"]: (r["completed"], json.dumps(r["subtasks"]), r["final_state"]) for r in lines}


def numbers(out: Path) -> dict:
    results = json.loads((out / "results.json").read_text())
    return {k: results[k] for k in NUMBERS}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("uninterrupted")
    proc = run(command(out, "workers=2"))
    assert "Average successful sequence length:" in proc.stdout and "| agent | env | chains |" in proc.stdout
    n = numbers(out)
    assert n["num_chains"] == NUM_CHAINS and 0 < n["avg_seq_len"] < 1  # the presser completes the LED chains only
    return out


def test_sigkill_then_rerun_gives_the_uninterrupted_results(tmp_path, uninterrupted):
    out = tmp_path / "killed"
    videos = ("videos=2", "video_failures=2")  # rendered during the run: the kill may land in one
    proc = subprocess.Popen(command(out, "workers=1", *videos), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    log = out / "results.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if log.exists() and len(log.read_bytes().splitlines()) >= 3:
            break
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)  # the parent only: its worker must notice and go away by itself
    proc.wait()
    done = len(log.read_bytes().splitlines())
    assert 3 <= done < NUM_CHAINS, f"the kill should land mid-run ({done} chains were done)"
    assert not (out / "results.json").exists()
    with open(log, "ab") as f:
        f.write(b'{"key": "chain/23", "completed": 1, "subta')  # and a torn last line, as a kill mid-write leaves
    run(command(out, "workers=1", *videos))
    assert numbers(out) == numbers(uninterrupted)
    assert records(out) == records(uninterrupted)
    selected = TraceStore(out / "traces", video_chains=2, video_failures=2).selected()
    names = sorted(f"{tf.video_name}.mp4" for tf in selected)
    assert len(names) == 4 and sorted(p.name for p in (out / "videos").iterdir()) == names
    render_videos(selected, tmp_path / "afterwards", EnvConfig(scene="D"), VideoSettings(ep_len=50))
    for name in names:
        assert np.array_equal(iio.imread(out / "videos" / name), iio.imread(tmp_path / "afterwards" / name)), name


def error_lines(stderr: str) -> list[str]:
    """What the command printed on stderr, less PyBullet's banner (its C library prints it on import)."""
    return [line for line in stderr.strip().splitlines() if not line.startswith("pybullet build time:")]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_rerun_of_a_finished_run_changes_nothing_and_other_settings_are_refused(tmp_path, uninterrupted):
    before = (uninterrupted / "results.jsonl").read_bytes()
    proc = run(command(uninterrupted, "workers=1"))
    assert (uninterrupted / "results.jsonl").read_bytes() == before and "Average successful sequence length" in proc.stdout
    finished = snapshot(uninterrupted)
    for overrides, differs in (("ep_len=10", "ep_len"), ("job_timeout_s=100", "job_timeout_s")):
        refused = subprocess.run(command(uninterrupted, overrides), cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert refused.returncode == 2 and f"differs in: {differs}" in refused.stderr, refused.stderr[-3000:]
        assert len(error_lines(refused.stderr)) == 1, refused.stderr
        assert snapshot(uninterrupted) == finished  # config.yaml included: a refused rerun writes nothing


def gated_command(out: Path, gate: Path, workers: int) -> list[str]:
    """4 chains of the gated presser: its workers hold inside chains 1.. while `gate` exists (created here)."""
    gate.touch()
    args = [a for a in command(out, f"workers={workers}") if not a.startswith(("agent.factory=", "num_chains="))]
    return args + ["agent.factory=tests.eval_agents:make_gated_presser", f"+agent.gate={gate}", "num_chains=4"]


def wait_for_chain_0(proc: subprocess.Popen, out: Path) -> None:
    log, deadline = out / "results.jsonl", time.monotonic() + 120
    while not (log.exists() and log.read_bytes().count(b"\n") >= 1):
        assert proc.poll() is None and time.monotonic() < deadline, "the run did not record chain 0"
        time.sleep(0.05)


def test_a_second_evaluation_of_a_folder_in_use_is_refused_at_once(tmp_path, uninterrupted):
    out, gate = tmp_path / "shared", tmp_path / "gate"
    args = gated_command(out, gate, workers=1)
    first = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for_chain_0(first, out)
        second = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and first.poll() is None, second.stderr
        assert f"is being written by another evaluation (pid {first.pid} holds" in second.stderr, second.stderr
        assert "Traceback" not in second.stderr and len(error_lines(second.stderr)) == 1, second.stderr
    finally:
        gate.unlink()
    assert first.wait(timeout=240) == 0, first.stderr.read()[-3000:]
    alone = {k: r for k, r in records(uninterrupted).items() if int(k.split("/")[1]) < 4}
    assert records(out) == alone  # every chain once, as in a run alone


def test_invalid_settings_fail_in_one_line_before_the_folder_is_touched(tmp_path):
    cases = {
        "agent=random env.scene=E": "env.scene: unknown scene 'E'",
        "agent=random env.backend=mujoco": "env.backend: unknown env backend 'mujoco'",
        "agent=random scene=E": "scene is now env.scene (the env owns the scene)",
        "agent=scripted agent.scene=A": "agent.scene is now env.scene",
        "agent=random seed=abc": "seed must be an integer, got 'abc'",
        "agent=random +num_chain=5": "eval: unknown key 'num_chain'",
        "agent=random job_timeout_s=0": "job_timeout_s must be > 0 seconds",
        "agent=random job_timeout_s=-5": "job_timeout_s must be > 0 seconds",
        "agent=vla": "agent.checkpoint: Missing mandatory value",
        f"agent=vla agent.checkpoint={tmp_path / 'nowhere'}": f"agent (vla): checkpoint {tmp_path / 'nowhere'}: is not a folder",
        "agent=random mode=single_task tasks=[open_the_door]": "open_the_door",
        "agent=random server=sometimes": "server must be one of ('auto', 'on', 'off'), got 'sometimes'",
        "agent=random server_options.max_batch=0": "server_options: max_batch >= 1",
        "agent=random +server_options.colour=red": "server_options: unknown keys ['colour']",
        "agent=random +instructions.close_the_drawer=shut": "instructions: unknown task 'close_the_drawer'",
    }
    for overrides, message in cases.items():
        out = tmp_path / "out"
        cmd = [sys.executable, "-m", "harness.eval", *overrides.split(), "num_chains=2", "ep_len=5", "workers=1",
               "videos=0", "video_failures=0", "progress=false", f"output_dir={out}"]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 2, (overrides, proc.stderr[-3000:])
        lines = error_lines(proc.stderr)
        assert len(lines) == 1 and lines[0].startswith("harness.eval: invalid configuration: ") and message in lines[0], proc.stderr
        assert not out.exists(), overrides


def test_instructions_from_the_command_line_reach_the_report(tmp_path):
    """The documented spelling (docs/EVALUATION.md): '+instructions={task: text}' adds to the empty mapping."""
    out = tmp_path / "out"
    run([sys.executable, "-m", "harness.eval", "agent=random", "mode=single_task", "tasks=[close_drawer]", "episodes_per_task=1",
         "ep_len=2", "workers=0", "videos=0", "video_failures=0", "progress=false", f"output_dir={out}",
         '+instructions={close_drawer: "close the drawer"}'])
    results = json.loads((out / "results.json").read_text())
    assert results["protocol"]["instructions"].endswith("replaced for 1 task(s) (close_drawer: 'close the drawer')")
    assert json.loads((out / "run.json").read_text())["instructions"] == {"close_drawer": "close the drawer"}


def test_torchrun_two_cpu_ranks_merge_to_the_single_process_results(tmp_path, uninterrupted):
    out = tmp_path / "torchrun"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "harness.eval", *ARGS, f"output_dir={out}", "workers=1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert not list(out.glob("results.rank*.jsonl"))  # merged into results.jsonl
    results = json.loads((out / "results.json").read_text())
    assert results["parallelism"] == {"workers_per_rank": 1, "world_size": 2, "server": "auto"}
    assert numbers(out) == numbers(uninterrupted)
    assert records(out) == records(uninterrupted)
    assert [json.loads(line)["index"] for line in (out / "results.jsonl").read_text().splitlines()] == list(range(NUM_CHAINS))


def test_eval_calvin_sh_passes_overrides_to_the_evaluation(tmp_path):
    venv = Path(sys.prefix)
    stamp = venv / ".vla-harness-installed"
    if not stamp.exists():  # (one it set up and the sources changed since is brought up to date first)
        pytest.skip("this venv was not set up by scripts/_venv.sh: the wrapper would install into it")
    cmd = ["bash", str(ROOT / "scripts" / "eval_calvin.sh"), "agent=random", "env=builtin", "env.scene=D", "num_chains=2",
           "workers=1", "ep_len=5", "videos=0", "video_failures=0", "progress=false", f"output_dir={tmp_path}"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env={**os.environ, "VLA_HARNESS_VENV": str(venv)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "| random | builtin D | 2 |" in proc.stdout and (tmp_path / "results.json").exists()


def live_children(pid: int) -> set[int]:
    """The processes `pid` started (Linux /proc), zombies left out."""
    kids = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        kids |= {int(k) for k in (task / "children").read_text().split()}
    return {k for k in kids if is_running(k)}


def is_running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state not in ("Z", "X")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_killed_evaluation_leaves_no_process_behind_and_resumes(tmp_path, uninterrupted, sig):
    out, gate = tmp_path / "killed", tmp_path / "gate"
    args = gated_command(out, gate, workers=2)  # busy workers, as in a long chain
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_chain_0(proc, out)
        started = live_children(proc.pid)
        assert len(started) >= 2  # the two workers (and multiprocessing's resource tracker, if any)
        os.kill(proc.pid, sig)
        assert proc.wait(timeout=60) == (143 if sig == signal.SIGTERM else -signal.SIGKILL)
        deadline = time.monotonic() + 15
        while any(is_running(k) for k in started) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [k for k in started if is_running(k)], "processes of the killed evaluation are still running"
    finally:
        gate.unlink()
    run(args)  # the same command carries on (the folder's lock went with the killed run)
    alone = {k: r for k, r in records(uninterrupted).items() if int(k.split("/")[1]) < 4}
    assert records(out) == alone
