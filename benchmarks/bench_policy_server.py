"""The batching policy server against a model per client, side by side in one run.

    python benchmarks/bench_policy_server.py                          # both parts, the e2e model untrained
    python benchmarks/bench_policy_server.py --part throughput --sessions 1 2 4 8 16 --steps 24 --max-wait-ms 20
    python benchmarks/bench_policy_server.py --part throughput --sessions 8 --rounds 5  # the median of 5 paired runs
    python benchmarks/bench_policy_server.py --part e2e --checkpoint runs/e2e/train/checkpoints/last --chains 100
    python benchmarks/bench_policy_server.py --part profile --batch 8

throughput: the project's tiny VLA (configs/model/tiny_idefics3.yaml, the model of scripts/e2e_cpu.sh),
    observations/s through the server (harness/serve, in its own process, native protocol) with N
    concurrent sessions (clients in another process, each stepping its own episode as fast as replies
    come) against the same model in this process stepping the same sessions' frames one at a time (batch
    1: one `VLAAgent` per session, its ordinary `step`, as an evaluation worker runs it). The server runs
    `--threads` torch threads; batch 1 is measured at each of 1..`--threads` and the ratio is against its
    fastest, since more threads do not always make one observation at a time faster. For each N the
    in-process rate is measured right before the server's, so that load from other processes hits both alike. Latency percentiles are the clients' (send -> reply); the mean
    batch and the compute share (the time the server's compute thread was stepping batches, over the
    clients' wall time; the rest is the round trip: replies, the clients' next observations, decoding)
    are the server's.
profile: where a step's time goes in this process, per observation, at batch 1 (the agent's `step`) and
    with all N sessions in one call: image preprocessing, the vision tower (+ connector), the language
    model, the policy head, and the rest (tokens, frames, execution), with the same model and frames.
e2e: an evaluation of the same chains with `workers` env workers, `server=on` (one model in a server)
    against `server=off` (a model per worker), and which of the two `server=auto` picks for that many workers
    on this machine: wall time, whether each chain ended the same, and memory
    (peak resident memory of the processes, sampled from /proc). Without --checkpoint the model is the
    untrained tiny VLA (the output says so): its subtasks all time out, so every chain runs 360 steps.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import platform
import secrets
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from harness.eval.config import EvalSettings, ServerOptions  # noqa: E402
from harness.eval.evaluation import run_evaluation  # noqa: E402
from harness.eval.served import wants_server  # noqa: E402
from harness.eval.specs import AgentConfig, EnvConfig  # noqa: E402
from harness.serve.process import ServerProcess  # noqa: E402
from harness.serve.server import ServeSettings  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
INSTRUCTIONS = ["open the drawer", "push the sliding door to the left side", "turn on the light bulb",
                "lift the red block from the table", "push the button to turn on the green light"]


def tiny_vla_checkpoint(folder: Path) -> Path:
    """The e2e model (configs/model/tiny_idefics3.yaml), untrained, saved as a checkpoint."""
    import torch

    from agents.vla.checkpoint import save_checkpoint
    from agents.vla.config import VLAConfig
    from agents.vla.model import VLAModel
    from harness.data.normalization import ActionNormalizer
    from harness.train.config import compose_config

    torch.manual_seed(0)
    cfg = VLAConfig.from_dict(compose_config(["model=tiny_idefics3", f"output_dir={folder}"])["model"])
    save_checkpoint(folder, VLAModel.build(cfg, verbose=False), ActionNormalizer())
    return folder


def session_frames(session: int, steps: int) -> tuple[list[dict[str, Any]], str]:
    """One session's observations (as the env hands them to the agent) and its instruction."""
    rng = np.random.default_rng(1000 + session)
    frames = [{"rgb_obs": {"rgb_static": rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)},
               "robot_obs": np.concatenate([[0.1, -0.2, 0.5], rng.normal(size=12)])} for _ in range(steps)]
    return frames, INSTRUCTIONS[session % len(INSTRUCTIONS)]


# ------------------------------------------------------------------ throughput
def in_process_rate(policy: Any, sessions: int, steps: int, batched: bool = False) -> float:
    """Observations/s of `sessions` agents on the policy's model, each stepping its episode one observation
    at a time (`VLAAgent.step`, batch 1), or of the policy stepping all sessions' observations in one call
    (`batched`: what the server can reach at best)."""
    from agents.vla.agent import VLAAgent

    episodes = [session_frames(s, steps) for s in range(sessions)]
    VLAAgent(policy.model, policy.normalizer, policy.cfg).step(episodes[0][0][0], episodes[0][1])  # warm-up
    agents = [VLAAgent(policy.model, policy.normalizer, policy.cfg) for _ in range(sessions)]
    states = [policy.new_session() for _ in range(sessions)]
    start = time.perf_counter()
    for t in range(steps):
        if batched:
            policy.step_batch(states, [frames[t] for frames, _ in episodes], [i for _, i in episodes])
            continue
        for agent, (frames, instruction) in zip(agents, episodes):
            agent.step(frames[t], instruction)
    return sessions * steps / (time.perf_counter() - start)


async def _client(url: str, token: str, session: int, steps: int, start: asyncio.Event) -> list[float]:
    from websockets.asyncio.client import connect

    from agents.remote.wire import pack_message, unpack_message

    frames, instruction = session_frames(session, steps)
    latencies = []
    async with connect(url, additional_headers={"Authorization": f"Api-Key {token}"}, max_size=None,
                       compression=None) as ws:
        await ws.send(pack_message("episode_start", {"seed": session}, 1))
        await start.wait()
        for t, obs in enumerate(frames):
            sent = time.perf_counter()
            await ws.send(pack_message("observation", {"obs": obs, "instruction": instruction}, t + 2))
            reply = unpack_message(await ws.recv())
            if reply.type != "action":
                raise RuntimeError(f"the server answered {reply.type}: {reply.payload}")
            latencies.append(time.perf_counter() - sent)
    return latencies


def clients_main(url: str, token: str, sessions: int, steps: int, out: Any) -> None:
    """A process of `sessions` concurrent clients; sends (observations/s, latencies) back."""
    async def run() -> tuple[float, list[float]]:
        start = asyncio.Event()
        tasks = [asyncio.create_task(_client(url, token, s, steps, start)) for s in range(sessions)]
        await asyncio.sleep(0.5)  # every session opened
        began = time.perf_counter()
        start.set()
        latencies = [x for lat in await asyncio.gather(*tasks) for x in lat]
        return sessions * steps / (time.perf_counter() - began), latencies

    out.send(asyncio.run(run()))


def served_rate(server: ServerProcess, sessions: int, steps: int) -> tuple[float, np.ndarray, float, float]:
    """Observations/s through the server, the clients' latencies (ms), the server's mean batch and the
    share of the clients' wall time that the server spent stepping batches."""
    before = server.stats()
    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=clients_main, args=(server.url, server.settings.token, sessions, steps, child))
    proc.start()
    rate, latencies = parent.recv()
    proc.join()
    after = server.stats()
    old = before["batch_sizes"]
    sizes = {int(k): v - old.get(k, 0) for k, v in after["batch_sizes"].items() if v - old.get(k, 0) > 0}
    mean_batch = sum(k * v for k, v in sizes.items()) / max(1, sum(sizes.values()))
    compute_share = (after["compute_s"] - before["compute_s"]) * rate / (sessions * steps)
    return rate, np.asarray(latencies) * 1e3, mean_batch, compute_share


def best_batch1_rates(policy: Any, sessions: int, steps: int, threads: int) -> dict[int, float]:
    """The batch-1 in-process rate at each of 1..`threads` torch threads (more threads do not always make one
    observation at a time faster: the ratio is taken against the fastest), leaving `threads` set."""
    import torch

    rates = {}
    for t in range(1, threads + 1):
        torch.set_num_threads(t)
        rates[t] = in_process_rate(policy, sessions, steps)
    torch.set_num_threads(threads)
    return rates


def throughput(checkpoint: Path, sessions: list[int], steps: int, threads: int, max_wait_ms: float,
               rounds: int = 1) -> dict[str, Any]:
    import torch

    from agents import make_policy

    torch.set_num_threads(threads)
    policy = make_policy("vla", checkpoint=str(checkpoint))
    settings = ServeSettings(port=0, token=secrets.token_hex(8), max_batch=max(sessions), max_wait_ms=max_wait_ms)
    rows = []
    print(f"{'round':>5} {'sessions':>8} {'in-process obs/s':>17} {'server obs/s':>13} {'ratio':>6} {'mean batch':>11} "
          f"{'compute share':>14} {'latency p50/p95/p99 ms':>24} {'in-process batched obs/s':>25}")
    with ServerProcess({"name": "vla", "checkpoint": str(checkpoint)}, settings, threads=threads) as server:
        served_rate(server, 1, 3)  # warm-up
        for r in range(1, rounds + 1):
            for n in sessions:
                alone_by_threads = best_batch1_rates(policy, n, steps, threads)
                alone = max(alone_by_threads.values())
                rate, lat, batch, share = served_rate(server, n, steps)
                ceiling = in_process_rate(policy, n, steps, batched=True)
                p50, p95, p99 = np.percentile(lat, [50, 95, 99])
                rows.append({"round": r, "sessions": n, "in_process_obs_s": round(alone, 2),
                             "in_process_obs_s_by_threads": {str(t): round(v, 2) for t, v in alone_by_threads.items()},
                             "server_obs_s": round(rate, 2),
                             "ratio": round(rate / alone, 2), "mean_batch": round(batch, 2),
                             "server_compute_share": round(share, 3),
                             "latency_ms": {"p50": round(p50, 1), "p95": round(p95, 1), "p99": round(p99, 1)},
                             "in_process_batched_obs_s": round(ceiling, 2)})
                print(f"{r:>5} {n:>8} {alone:>17.1f} {rate:>13.1f} {rate / alone:>5.2f}x {batch:>11.2f} {share:>13.0%} "
                      f"{p50:>10.1f} / {p95:5.1f} / {p99:5.1f} {ceiling:>25.1f}", flush=True)
    medians = {n: float(np.median([row["ratio"] for row in rows if row["sessions"] == n])) for n in sessions}
    if rounds > 1:
        print(f"median ratio over {rounds} rounds: " + ", ".join(f"{n} sessions {m:.2f}x" for n, m in medians.items()),
              flush=True)
    return {"rows": rows, "median_ratio": {str(n): m for n, m in medians.items()}, "threads": threads,
            "steps_per_session": steps, "max_wait_ms": max_wait_ms, "rounds": rounds}


# ------------------------------------------------------------------ profile
class PartTimer:
    """Wall time spent in parts of the model (module forwards, or methods), summed; nested parts are
    counted in each part that contains them."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._undo: list[Any] = []

    def module(self, name: str, module: Any) -> None:
        started: list[float] = []
        pre = module.register_forward_pre_hook(lambda *_: started.append(time.perf_counter()))
        post = module.register_forward_hook(lambda *_: self._add(name, time.perf_counter() - started.pop()))
        self._undo += [pre.remove, post.remove]

    def method(self, name: str, owner: Any, attr: str) -> None:
        inner = getattr(owner, attr)

        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return inner(*args, **kwargs)
            finally:
                self._add(name, time.perf_counter() - began)

        setattr(owner, attr, timed)
        self._undo.append(lambda: delattr(owner, attr))

    def _add(self, name: str, seconds: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + seconds

    def remove(self) -> None:
        for undo in self._undo:
            undo()


def profile(checkpoint: Path, sessions: int, steps: int, threads: int) -> dict[str, Any]:
    """Per observation (ms), where the time of a step goes at batch 1 and at batch `sessions`."""
    import torch

    from agents import make_policy

    torch.set_num_threads(threads)
    policy = make_policy("vla", checkpoint=str(checkpoint))
    backbone = policy.model.backbone
    timer = PartTimer()
    timer.method("preprocess", backbone, "pixel_inputs")
    for module in backbone.vision_modules:
        timer.module("vision", module)
    timer.module("language model", backbone.language_model)
    timer.method("head", policy.model.head, "step_batch")
    parts = ("preprocess", "vision", "language model", "head")
    out: dict[str, Any] = {}
    print(f"{'':>22} " + " ".join(f"{p:>15}" for p in (*parts, "rest", "total")) + f" {'obs/s':>7}")
    try:
        for label, batched in (("batch 1 (agent.step)", False), (f"batch {sessions} (one call)", True)):
            in_process_rate(policy, sessions, 4, batched)  # warm-up
            timer.seconds.clear()
            rate = in_process_rate(policy, sessions, steps, batched)
            n = sessions * steps
            ms = {p: timer.seconds.get(p, 0.0) / n * 1e3 for p in parts}
            ms["total"] = 1e3 / rate
            ms["rest"] = ms["total"] - sum(ms[p] for p in parts)
            out[label] = {k: round(v, 3) for k, v in ms.items()} | {"obs_s": round(rate, 1)}
            print(f"{label:>22} " + " ".join(f"{ms[p]:>12.2f} ms" for p in (*parts, "rest", "total")) + f" {rate:>7.1f}",
                  flush=True)
    finally:
        timer.remove()
    return out


# ------------------------------------------------------------------ end to end
class MemorySampler:
    """Peak resident memory (MB) of this process's descendants, summed over them and per process kind."""

    def __init__(self, every_s: float = 0.5) -> None:
        self.every_s, self.peak_total, self.peak_each = every_s, 0.0, 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every_s):
            rss = [_rss_mb(pid) for pid in _descendants(os.getpid())]
            self.peak_total = max(self.peak_total, sum(rss))
            self.peak_each = max([self.peak_each, *rss])

    def __enter__(self) -> "MemorySampler":
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def end_to_end(checkpoint: Path, trained: bool, chains: int, ep_len: int, workers: int, threads: int) -> dict[str, Any]:
    agent = AgentConfig("vla", {"checkpoint": str(checkpoint)})
    runs = {}
    for server in ("on", "off"):
        settings = EvalSettings(num_chains=chains, ep_len=ep_len, workers=workers, progress=False, server=server,
                                server_options=ServerOptions(threads=threads), videos=0, video_failures=0)
        with tempfile.TemporaryDirectory() as out, MemorySampler() as memory:
            results = run_evaluation(settings, EnvConfig(), agent, out, print_summary=False)
            records = [json.loads(line) for line in (Path(out) / "results.jsonl").read_text().splitlines()]
        runs[server] = {"rollout_s": results["timings"]["rollout_s"], "avg_seq_len": results["avg_seq_len"],
                        "peak_rss_mb_all": round(memory.peak_total), "peak_rss_mb_largest": round(memory.peak_each),
                        "server": results.get("server"),
                        "chains": {r["key"]: (r["completed"], [s["reason"] for s in r["subtasks"]], r["final_state"])
                                   for r in records}}
        print(f"server={server}: {runs[server]['rollout_s']:.1f} s for {chains} chains, avg len "
              f"{results['avg_seq_len']:.3f}, peak memory of all processes {memory.peak_total:.0f} MB "
              f"(largest process {memory.peak_each:.0f} MB)", flush=True)
    served, off = runs["on"]["chains"], runs["off"]["chains"]
    same_outcome = sum(served[k][:2] == off[k][:2] for k in off)
    same_state = sum(served[k][2] == off[k][2] for k in off)
    (server_stats,) = runs["on"]["server"]
    auto_picks = "a server" if wants_server("auto", agent, workers) else "a model per worker"
    print(f"speed-up of one server vs a model per worker: {runs['off']['rollout_s'] / runs['on']['rollout_s']:.2f}x "
          f"(server=auto picks {auto_picks} for {workers} workers on {os.cpu_count()} cores); "
          f"chains with the same outcomes: {same_outcome}/{len(off)}, the same final state (bit for bit): "
          f"{same_state}/{len(off)}", flush=True)
    print(f"server: {server_stats['requests']} requests, mean batch {server_stats['mean_batch']}, latency p50/p95/p99 "
          f"{server_stats['latency_ms']} ms, peak memory {server_stats['peak_rss_mb']} MB (one model)", flush=True)
    return {"model": "given checkpoint" if trained else "untrained tiny VLA (configs/model/tiny_idefics3.yaml)",
            "chains": chains, "ep_len": ep_len, "workers": workers, "server_threads": threads,
            "speedup": round(runs["off"]["rollout_s"] / runs["on"]["rollout_s"], 3), "auto_picks": auto_picks,
            "same_outcomes": same_outcome, "same_final_state": same_state,
            **{k: {kk: vv for kk, vv in v.items() if kk != "chains"} for k, v in runs.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=("throughput", "e2e", "both", "profile"), default="both",
                        help="both: throughput and e2e; profile: where a step's time goes (not part of both)")
    parser.add_argument("--sessions", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--steps", type=int, default=24, help="observations per session (throughput, profile)")
    parser.add_argument("--batch", type=int, default=8, help="profile: the sessions stepped together")
    parser.add_argument("--rounds", type=int, default=1,
                        help="throughput: measure every row this many times (the ratio moves with other jobs' load; "
                             "the median ratio is printed)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads of the server and of the in-process batched call; batch 1 in-process is "
                             "measured at 1..THREADS and the fastest taken")
    parser.add_argument("--max-wait-ms", type=float, default=20.0,
                        help="the server's max_wait_ms (default: server=auto's; at 5, configs/serve.yaml's, clients on a "
                             "busy machine miss the batch the others wait in and batches split)")
    parser.add_argument("--checkpoint", default=None, help="e2e: a trained checkpoint (default: the untrained tiny VLA)")
    parser.add_argument("--chains", type=int, default=100)
    parser.add_argument("--ep-len", type=int, default=360)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--server-threads", type=int, default=0, help="e2e: the server's torch threads (0: the cores the env workers leave, at least 1)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    from transformers.utils import logging

    logging.disable_progress_bar()
    print(f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}, load average "
          f"{os.getloadavg()[0]:.2f}; no GPU used", flush=True)
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tiny = tiny_vla_checkpoint(Path(tmp) / "tiny_vla")
        if args.part in ("throughput", "both"):
            print(f"\nthroughput: untrained tiny VLA (tiny_idefics3, LSTM head, window 8, chunk 10, fp32) on both "
                  f"sides; the same frames (per session: its own seeded 200x200 rgb_static and robot_obs, {args.steps} "
                  f"observations, one of {len(INSTRUCTIONS)} instructions); {args.threads} torch thread(s) in the "
                  f"server and for this process's batched call, batch 1 at the fastest of 1..{args.threads}", flush=True)
            out["throughput"] = throughput(tiny, args.sessions, args.steps, args.threads, args.max_wait_ms, args.rounds)
        if args.part == "profile":
            print(f"\nprofile: untrained tiny VLA (tiny_idefics3, LSTM head, window 8, chunk 10, fp32), {args.batch} "
                  f"sessions, {args.steps} observations each, {args.threads} torch thread(s); ms per observation",
                  flush=True)
            out["profile"] = profile(tiny, args.batch, args.steps, args.threads)
        if args.part in ("e2e", "both"):
            checkpoint = Path(args.checkpoint) if args.checkpoint else tiny
            what = checkpoint if args.checkpoint else "the untrained tiny VLA (no trained checkpoint given)"
            print(f"\nend to end: {what}, {args.chains} chains, ep_len {args.ep_len}, {args.workers} workers", flush=True)
            out["e2e"] = end_to_end(checkpoint, args.checkpoint is not None, args.chains, args.ep_len, args.workers,
                                    args.server_threads)
    if args.json:
        Path(args.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
