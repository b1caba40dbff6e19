"""server=auto: one policy server for the evaluation's workers instead of a model per worker. Its results
are those of the agent in-process, chain by chain; a server killed mid-evaluation is started again and the
interrupted chains run again, ending as they would have; its statistics reach the report."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from harness.eval.config import EvalSettings, ServerOptions
from harness.eval.evaluation import run_evaluation
from harness.eval.runner import default_threads
from harness.eval.served import PolicyServerForWorkers, wants_server
from harness.ranks import rank_cores
from harness.eval.specs import AgentConfig, EnvConfig, agent_device
from harness.serve.process import ServerProcess
from harness.serve.server import ServeSettings
from tests.serve_helpers import ROOT, checkpoint, wait_for  # noqa: F401  (fixture)

CHAINS, EP_LEN = 4, 30
# One thread and batches of one: the server's arithmetic is then the in-process agent's, bit for bit
# (batched steps agree to ~1e-6, which a long rollout can amplify; test_vla_batched.py bounds them).
EXACT = ServerOptions(max_batch=1, threads=1)


def _settings(**kw) -> EvalSettings:
    return EvalSettings(num_chains=CHAINS, ep_len=EP_LEN, progress=False, **{"videos": 0, "video_failures": 0, **kw})


def _records(folder: Path) -> dict[str, tuple]:
    """What must not change: per chain, its subtasks' outcomes and the digest of its final state."""
    records = [json.loads(line) for line in (folder / "results.jsonl").read_text().splitlines()]
    return {r["key"]: (r["completed"], [(s["task"], s["reason"], s["steps"]) for s in r["subtasks"]], r["final_state"])
            for r in records}


def test_server_auto_serves_model_agents_where_a_server_pays():
    """On CPU a server pays only when the env workers outnumber the cores (docs/SERVING.md); on a GPU always."""
    vla = AgentConfig("vla", {"checkpoint": "x"})
    assert wants_server("auto", vla, workers=4, cores=2) and not wants_server("auto", vla, workers=1, cores=1)
    assert not wants_server("auto", vla, workers=2, cores=2) and not wants_server("auto", vla, workers=8, cores=16)
    on_gpu = AgentConfig("vla", {"checkpoint": "x", "device": "cuda"})
    assert wants_server("auto", on_gpu, workers=2, cores=64) and not wants_server("auto", on_gpu, workers=1, cores=64)
    # the device is read in one place, for server=auto as for the torchrun backend
    assert agent_device(on_gpu) == "cuda" and agent_device(vla) is None and agent_device(lambda: None) is None
    assert not wants_server("auto", AgentConfig("scripted"), workers=8) and not wants_server("off", vla, workers=8)
    assert wants_server("on", AgentConfig("scripted"), workers=1)
    with pytest.raises(ValueError, match="cannot be sent to a server"):
        wants_server("on", lambda: None, workers=2)
    with pytest.raises(ValueError, match="a remote agent is served already"):
        wants_server("on", AgentConfig("remote", {"url": "ws://x"}), workers=2)
    with pytest.raises(ValueError, match="server must be one of"):
        EvalSettings(server="sometimes")


def test_cores_are_shared_out_by_one_rule(monkeypatch):
    """harness.ranks.rank_cores divides the machine among the ranks on it; the workers' torch threads, the
    policy server's threads and server=auto's choice all start from it."""
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert rank_cores() == 16 and rank_cores(4) == 4 and rank_cores(32) == 1
    assert default_threads(workers=2, local_world=2) == 4 and default_threads(workers=16, local_world=4) == 1
    vla = AgentConfig("vla", {"checkpoint": "x"})
    assert not wants_server("auto", vla, workers=16) and wants_server("auto", vla, workers=17)
    assert PolicyServerForWorkers(vla, ServerOptions(), workers=2, local_world_size=2).threads == 6
    assert PolicyServerForWorkers(vla, ServerOptions(), workers=8, local_world_size=2).threads == 1
    assert PolicyServerForWorkers(vla, ServerOptions(threads=3), workers=8).threads == 3
    # OMP_NUM_THREADS, where set, caps the threads the harness would give (never raises them)
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert default_threads(workers=1) == 1 and PolicyServerForWorkers(vla, ServerOptions(), workers=2).threads == 1
    assert PolicyServerForWorkers(vla, ServerOptions(threads=3), workers=8).threads == 3
    monkeypatch.setenv("OMP_NUM_THREADS", "4")
    assert default_threads(workers=2) == 4 and default_threads(workers=16) == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "")
    assert default_threads(workers=1) == 16


@pytest.fixture(scope="module")
def in_process(checkpoint, tmp_path_factory) -> dict[str, tuple]:
    folder = tmp_path_factory.mktemp("in_process")
    run_evaluation(_settings(workers=0, server="off"), EnvConfig(), AgentConfig("vla", {"checkpoint": str(checkpoint)}), folder)
    return _records(folder)


def test_workers_served_by_one_server_give_the_in_process_results(checkpoint, in_process, tmp_path, capsys):
    agent = AgentConfig("vla", {"checkpoint": str(checkpoint)})
    results = run_evaluation(_settings(workers=2, server="on", server_options=EXACT), EnvConfig(), agent, tmp_path)
    assert _records(tmp_path) == in_process
    assert results["agent"]["name"] == "vla" and results["agent"]["extra"]["served_by"]["protocol"] == "native"
    (server,) = results["server"]
    assert server["requests"] == CHAINS * EP_LEN and server["batch_sizes"] == {"1": CHAINS * EP_LEN}
    assert set(server["latency_ms"]) == {"p50", "p95", "p99"} and server["peak_rss_mb"] > 0
    assert server["sessions_open"] == 0 and server["sessions_total"] == CHAINS and server["restarts"] == 0
    assert "## Policy server" in (tmp_path / "report.md").read_text()
    assert "Policy server:\n| rank | requests | latency p50 / p95 / p99 (ms)" in capsys.readouterr().out
    assert not list(tmp_path.glob("server.rank*.json"))  # folded into results.json


def test_a_server_killed_mid_evaluation_comes_back_and_the_chain_runs_again(checkpoint, in_process, tmp_path, capfd):
    settings = ServeSettings(port=0, max_batch=1)
    with ServerProcess({"name": "vla", "checkpoint": str(checkpoint)}, settings, threads=1) as server:
        def kill_after_the_first_chain() -> None:
            log = tmp_path / "results.jsonl"
            wait_for(lambda: log.exists() and log.read_text().strip(), 300, "the first chain's result")
            server.kill()

        killer = threading.Thread(target=kill_after_the_first_chain, daemon=True)
        killer.start()
        agent = AgentConfig("remote", {"url": server.url, "reconnect_timeout_s": 300})
        run_evaluation(_settings(workers=2), EnvConfig(), agent, tmp_path)
        killer.join()
        assert server.restarts == 1
    assert _records(tmp_path) == in_process
    assert "waiting for it, then running the chain again" in capfd.readouterr().err


def test_under_torchrun_each_rank_serves_its_own_workers(checkpoint, in_process, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "harness.eval", "agent=vla", f"agent.checkpoint={checkpoint}",
           f"num_chains={CHAINS}", f"ep_len={EP_LEN}", "workers=1", "server=on", "server_options.max_batch=1",
           "server_options.threads=1", "videos=0", "video_failures=0", "progress=false", f"output_dir={tmp_path}"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert _records(tmp_path) == in_process
    servers = json.loads((tmp_path / "results.json").read_text())["server"]
    assert [s["rank"] for s in servers] == [0, 1] and sum(s["requests"] for s in servers) == CHAINS * EP_LEN


@pytest.mark.parametrize("level", (1, 3))
def test_a_served_expert_plans_with_the_blocks_the_workers_env_recoloured(level):
    """`server=on` with the block colour axis: the server has no env, so it is told the workers' blocks' sizes by
    colour and binds the scripted expert to them, as the env binds it in-process (it planned grasps with the
    plain scene's sizes)."""
    from agents import make_policy
    from harness.envs.perturbations import Perturbations
    from harness.sim.layout import get_layout

    env = EnvConfig(perturb=Perturbations(block_colors=level)).build(cameras=())
    try:
        recoloured = env.description.block_sizes
    finally:
        env.close()
    served = PolicyServerForWorkers(AgentConfig("scripted", {}), ServerOptions(), workers=2, scene="D",
                                    block_colors=level)
    assert served.server.agent["block_sizes"] == recoloured
    expert = make_policy(**served.server.agent).new_session()
    assert expert.world.layout.block_sizes == recoloured != get_layout("D").block_sizes
    plain = PolicyServerForWorkers(AgentConfig("scripted", {}), ServerOptions(), workers=2, scene="D")
    assert plain.server.agent["block_sizes"] is None
