"""An evaluation from settings to reports: jobs, resume, ranks, workers, progress, videos, results.

    results = run_evaluation(EvalSettings(num_chains=100, workers=2), EnvConfig(scene="D"),
                             AgentConfig("scripted"), output_dir="runs/eval/x")
    results = evaluate_single_tasks(lambda: my_agent, tasks=["open_drawer"], episodes_per_task=5)   # from training

Resume: everything finished is in the output folder's results.jsonl (and rank logs); a run in the same
folder skips those jobs. The final numbers are computed from the records in job order, so they do not
depend on how the work was split, interrupted or resumed.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import yaml

from harness.config_errors import ConfigError, config_errors
from harness.durable_files import atomic_write_text
from harness.envs.perturbations import level_name
from harness.eval.config import IN_PROCESS, EvalSettings, pin_checkpoint
from harness.eval.jobs import Job
from harness.eval.report import console_summary, write_reports
from harness.eval.results import running_summary, summarize
from harness.eval.runner import RunSettings, default_threads, run_jobs
from harness.eval.served import PolicyServerForWorkers, wants_server
from harness.eval.specs import AgentConfig, AgentSource, EnvConfig, agent_device, check_sources, describe_agent_source
from harness.eval.store import RESULTS, ResultsLog, check_run_key, clear_results, rank_log_name, read_results, write_merged
from harness.eval.video import TraceStore, VideoQueue, VideoSettings, render_videos, video_jobs
from harness.folder_lock import FolderBusy, FolderLock
from harness.ranks import (DistInfo, barrier, broadcast_json, choose_backend, dist_from_env, init_distributed, rank_cores,
                          rank_device, shutdown)

@dataclass
class _Progress:
    """The bar (rank 0): chains done of all, ETA, and CALVIN's running success rates."""

    total: int
    completed: list[int] = field(default_factory=list)
    bar: Any = None

    def start(self, initial: int, enabled: bool, desc: str) -> None:
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=self.total, initial=initial, desc=desc, unit="chain", dynamic_ncols=True)
            self.refresh()

    def add(self, record: dict[str, Any]) -> None:
        self.completed.append(int(record["completed"]))
        if self.bar is not None:
            self.bar.update(1)
            self.refresh()

    def refresh(self) -> None:
        if self.bar is not None and self.completed:
            self.bar.set_postfix_str(running_summary(self.completed), refresh=False)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _agent_for_rank(agent: AgentSource, dist: DistInfo) -> AgentSource:
    if isinstance(agent, AgentConfig) and "device" in agent.kwargs:
        return replace(agent, kwargs={**agent.kwargs, "device": rank_device(agent.kwargs["device"], dist)})
    return agent


def run_evaluation(settings: EvalSettings, env: EnvConfig, agent: AgentSource, output_dir: str | Path | None,
                   config: dict[str, Any] | None = None, print_summary: bool = True,
                   pinned_checkpoint: str | None = None) -> dict[str, Any]:
    """Run (or resume) an evaluation; returns results.json's content on rank 0 ({} on other ranks).

    output_dir None: nothing is written and nothing resumed (for quick checks from Python).
    print_summary: print CALVIN's printout and table (or the per-task table) at the end.
    pinned_checkpoint: the folder the agent's checkpoint link named when the caller read it (else read now).
    """
    started = time.perf_counter()
    dist = dist_from_env()
    if dist.active and output_dir is None:
        raise ValueError("under torchrun the ranks share their results through output_dir: set one")
    with config_errors():
        check_sources(env, agent)  # before the output folder is touched or a worker is started
        if settings.instructions and env.perturb.language:
            raise ValueError("instructions and env.perturb.language both reword the instructions: set one of them")
        wants_server(settings.server, agent, settings.workers)
    dist = init_distributed(dist, choose_backend(settings.dist_backend, agent_device(agent)), settings.dist_timeout_s)
    try:
        results = _evaluate(settings, env, _agent_for_rank(agent, dist), output_dir, config, dist, started,
                            pinned_checkpoint)
    finally:
        shutdown(dist)
    if results and print_summary:
        print(console_summary(results), flush=True)
        if output_dir is not None:
            print(f"\nreport: {Path(output_dir) / 'report.md'}", flush=True)
    return results


def _evaluate(settings: EvalSettings, env: EnvConfig, agent: AgentSource, output_dir: str | Path | None,
              config: dict[str, Any] | None, dist: DistInfo, started: float,
              pinned_checkpoint: str | None) -> dict[str, Any]:
    chains_started = time.perf_counter()
    with config_errors():
        jobs = settings.jobs()  # unknown task names fail here, before the folder is touched
    chains_s = time.perf_counter() - chains_started
    folder = Path(output_dir) if output_dir is not None else None
    pinned = _pinned_by_rank0(pin_checkpoint(agent, pinned_checkpoint), dist)  # a link read once: the key names the folder the agent loads
    if folder is None or not dist.is_main:
        return _run(settings, jobs, chains_s, env, pinned, folder, config, dist, started)
    key, agent = settings.run_key(env, agent, pinned), pinned  # rank 0's only: it hashes the checkpoint
    folder.mkdir(parents=True, exist_ok=True)
    try:  # rank 0 writes the folder's shared files for the whole run (the other ranks only their own logs)
        lock = FolderLock(folder, "written by another evaluation").acquire()
    except FolderBusy as e:
        raise ConfigError(f"output_dir: {e}") from None
    try:
        _claim(folder, settings, key, config)
        return _run(settings, jobs, chains_s, env, agent, folder, config, dist, started)
    finally:
        lock.release()


def _pinned_by_rank0(pinned: AgentSource, dist: DistInfo) -> AgentSource:
    """Under torchrun, the checkpoint folder rank 0 pinned on every rank: a training moving a link between two
    ranks' reads would have the ranks evaluate different models under one key."""
    if not dist.active:
        return pinned
    path = pinned.kwargs.get("checkpoint") if isinstance(pinned, AgentConfig) else None
    path = broadcast_json(path if isinstance(path, str) else None, dist)
    if path is None:
        return pinned
    return replace(pinned, kwargs={**pinned.kwargs, "checkpoint": path})


def _claim(folder: Path, settings: EvalSettings, key: dict[str, Any], config: dict[str, Any] | None) -> None:
    """Clear the folder (overwrite), check the resume key, then record the config: a refused rerun
    changes nothing in the folder."""
    if settings.overwrite:
        clear_results(folder)
    with config_errors():
        check_run_key(folder, key)
    if config is not None:
        (folder / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def _run(settings: EvalSettings, jobs: list[Job], chains_s: float, env: EnvConfig, agent: AgentSource,
         folder: Path | None, config: dict[str, Any] | None, dist: DistInfo, started: float) -> dict[str, Any]:
    barrier(dist)  # the folder is checked (or cleared) before anyone reads it
    done = read_results(folder) if folder is not None else {}
    barrier(dist)  # everyone has read the same finished set before anyone appends to it
    pending = [job for job in jobs if job.key not in done]
    mine = dist.shard(pending)

    records: dict[str, dict[str, Any]] = {k: r for k, r in done.items()}
    description = _saved_description(folder)
    traces = (TraceStore(folder / "traces", settings.videos, settings.video_failures, {j.key: j.index for j in jobs})
              if folder is not None else None)
    videos = VideoQueue()
    finished_below = 0  # jobs[:finished_below] have all finished
    own = {job.key for job in mine}

    def queue_due_videos() -> None:
        """Hand the videos that are sure to be kept to the workers, beside the rollouts (under torchrun,
        those of this rank's own jobs); rank 0 renders the rest at the end."""
        nonlocal finished_below
        while finished_below < len(jobs) and jobs[finished_below].key in records:
            finished_below += 1
        if traces is not None:
            due = [tf for tf in traces.due(finished_below) if not dist.active or tf.meta["key"] in own]
            videos.pending.extend(video_jobs(due, folder / "videos", _video_settings(settings)))

    finished = [int(done[j.key]["completed"]) for j in jobs if j.key in done]
    progress = _Progress(len(finished) + len(mine), finished)  # under torchrun: rank 0's own share
    log = ResultsLog(folder / (rank_log_name(dist.rank) if dist.active else RESULTS)) if folder is not None else None

    def on_ready(desc: dict[str, Any]) -> None:
        nonlocal description
        if done:
            _check_same_env(folder, description, desc)
        description = desc
        if folder is not None and dist.is_main:
            _save_description(folder, desc)

    def on_result(record: dict[str, Any], job_traces: Any) -> None:
        if log is not None:
            log.append(record)  # durable first: a kill after this line loses nothing
        records[record["key"]] = record
        if traces is not None:
            traces.add(record, job_traces)
            queue_due_videos()
        progress.add(record)

    run_settings = RunSettings(
        ep_len=settings.ep_len, video_chains=settings.videos if folder else 0,
        video_failures=bool(settings.video_failures) and folder is not None,
        threads=default_threads(settings.workers, dist.local_world_size), job_timeout_s=settings.job_timeout_s,
        instructions=settings.instructions,
    )
    progress.start(len(finished), settings.progress and dist.is_main, _bar_label(settings, dist, len(mine)))
    run_started = time.perf_counter()
    server_stats = None
    try:
        if mine:
            queue_due_videos()  # a resumed run's videos that a kill cut short
            if wants_server(settings.server, agent, settings.workers, rank_cores(dist.local_world_size)):
                served = PolicyServerForWorkers(agent, settings.server_options, settings.workers, dist.local_world_size,
                                                env.scene, env.perturb.block_colors)
                with served as remote:
                    run_jobs(mine, env, remote, run_settings, settings.workers, on_result, on_ready, videos)
                server_stats = served.stats
            else:
                run_jobs(mine, env, agent, run_settings, settings.workers, on_result, on_ready, videos)
    finally:
        progress.close()
        if log is not None:
            log.close()
    run_s = time.perf_counter() - run_started
    if folder is not None and server_stats is not None:
        atomic_write_text(folder / f"server.rank{dist.rank}.json", json.dumps(server_stats, indent=2) + "\n")
    barrier(dist)  # every rank's log (and server statistics) is complete
    if not dist.is_main:
        return {}
    if folder is not None:  # the other ranks' records too
        records = _merge(folder, jobs, dist)
    description = description or _saved_description(folder) or _fallback_description(env, agent)
    results = summarize(_in_job_order(jobs, records), settings.mode)
    results.update(_context(settings, env, description, dist, config))
    video_started = time.perf_counter()
    if traces is not None and (settings.videos or settings.video_failures):
        video_paths = render_videos(traces.selected(), folder / "videos", env, _video_settings(settings))
        results["videos"] = [str(p.relative_to(folder)) for p in video_paths]
    results["timings"] = _timings(_in_job_order(jobs, records), len(pending), chains_s, run_s, videos,
                                  time.perf_counter() - video_started, time.perf_counter() - started)
    results["server"] = _server_section(folder, dist, server_stats)
    if folder is not None:
        write_reports(folder, results)
    return results


def _video_settings(settings: EvalSettings) -> VideoSettings:
    return VideoSettings(settings.ep_len, settings.video_fps, settings.video_format, settings.video_stride)


def _merge(folder: Path, jobs: Sequence[Job], dist: DistInfo) -> dict[str, dict[str, Any]]:
    """Every record in the folder; rank logs are folded into results.jsonl (in job order, then records of
    jobs this run did not ask for, which a later run with more chains will use)."""
    records = read_results(folder)
    if dist.active or any(folder.glob("results.rank*.jsonl")):
        keys = {j.key for j in jobs}
        write_merged(folder, _in_job_order(jobs, records) + [r for k, r in records.items() if k not in keys])
    return records


def _server_section(folder: Path | None, dist: DistInfo, own: dict[str, Any] | None) -> list[dict[str, Any]] | None:
    """The policy servers' statistics of this run, one entry per rank that started one (None: no server)."""
    if folder is None:
        return [{"rank": 0, **own}] if own is not None else None
    ranks = []
    for rank in range(dist.world_size):
        path = folder / f"server.rank{rank}.json"
        if path.exists():
            ranks.append({"rank": rank, **json.loads(path.read_text())})
            path.unlink()
    return ranks or None


def _bar_label(settings: EvalSettings, dist: DistInfo, mine: int) -> str:
    what = "chains" if settings.mode == "chains" else "episodes"
    where = f"rank 0/{dist.world_size} ({mine} here)" if dist.active else f"{settings.workers} worker(s)"
    return f"{what}, {where}"


def _in_job_order(jobs: Sequence[Job], records: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    return [records[j.key] for j in jobs if j.key in records]


def _saved_description(folder: Path | None) -> dict[str, Any] | None:
    path = folder / "description.json" if folder is not None else None
    return json.loads(path.read_text()) if path is not None and path.exists() else None


def _check_same_env(folder: Path | None, saved: dict[str, Any] | None, now: dict[str, Any]) -> None:
    """A resumed run's env must be the one its finished results were measured on: the run key names the env's
    settings, the description the simulator that ran them (calvin_env at another commit behaves otherwise,
    docs/EVALUATION.md), known only once a worker has built it."""
    old, new = (saved or {}).get("env", {}).get("version"), now.get("env", {}).get("version")
    if old and new and old != new:
        raise ConfigError(f"{folder} holds results measured on {old!r}; this run's env is {new!r}: choose another "
                          "output_dir, or overwrite=true to discard them")


def _save_description(folder: Path, description: dict[str, Any]) -> None:
    atomic_write_text(folder / "description.json", json.dumps(description, indent=2) + "\n")


def _fallback_description(env: EnvConfig, agent: AgentSource) -> dict[str, Any]:
    """When no worker ever started (nothing was pending and no description was saved)."""
    name = agent.name if isinstance(agent, AgentConfig) else describe_agent_source(agent)["factory"]
    return {
        "env": {"backend": env.backend, "scene": env.scene, "renderer": "unknown", "cameras": [], "version": ""},
        "agent": {"name": name, "action_type": "unknown", "cameras": [], "privileged": False, "checkpoint": None, "extra": {}},
    }


def _context(settings: EvalSettings, env: EnvConfig, description: dict[str, Any], dist: DistInfo, config: dict[str, Any] | None) -> dict[str, Any]:
    protocol = {"mode": settings.mode, "ep_len": settings.ep_len, "seed": settings.seed}
    if settings.mode == "chains":
        protocol["chains"] = f"the first {settings.num_chains} of CALVIN's 1000 benchmark chains, in CALVIN's order"
    else:
        protocol["episodes_per_task"] = settings.episodes_per_task
    protocol["instructions"] = "CALVIN's validation instruction per task (the first phrasing)"
    if settings.instructions:  # not CALVIN's protocol: the report says which
        replaced = "; ".join(f"{task}: {text!r}" for task, text in sorted(settings.instructions.items()))
        protocol["instructions"] += f", replaced for {len(settings.instructions)} task(s) ({replaced})"
    if env.perturb.language:  # the language axis rewords them (docs/ROBUSTNESS.md)
        protocol["instructions"] += f", reworded: language level {env.perturb.language} ({level_name('language', env.perturb.language)})"
    context = {"mode": settings.mode, "env": description["env"], "agent": description["agent"], "protocol": protocol,
               "parallelism": {"workers_per_rank": settings.workers, "world_size": dist.world_size,
                               "server": settings.server}}
    if config is not None:
        context["config"] = config
    return context


def _timings(records: Sequence[dict[str, Any]], ran: int, chains_s: float, run_s: float, videos: VideoQueue,
             video_s: float, total_s: float) -> dict[str, Any]:
    job_s = sum(float(r["wall_s"]) for r in records)
    steps = sum(int(r["steps"]) for r in records)
    return {
        "total_s": round(total_s, 2),
        "chains_s": round(chains_s, 2),  # the job list (CALVIN's chain list, from its cache)
        "rollout_s": round(run_s, 2),  # the workers' time: rollouts, and the videos rendered beside them
        "video_s": round(video_s, 2),  # the videos rendered after the rollouts, in this process
        "videos_during_rollouts": len(videos.rendered),  # by the render process (workers=0: between jobs)
        "video_during_rollouts_s": round(sum(v.seconds for v in videos.rendered), 2),  # part of rollout_s
        "jobs_run_now": ran,
        "jobs_per_min": round(ran / run_s * 60, 2) if run_s > 0 and ran else None,
        "mean_job_s": round(job_s / len(records), 3) if records else None,
        "mean_job_cpu_s": round(sum(float(r.get("cpu_s", 0.0)) for r in records) / len(records), 3) if records else None,
        "env_steps_per_s_per_worker": round(steps / job_s, 1) if job_s > 0 else None,
    }


def evaluate_single_tasks(agent: AgentSource, env: EnvConfig | None = None, output_dir: str | Path | None = None,
                          **settings: Any) -> dict[str, Any]:
    """Single-task success rates from Python: `settings` are EvalSettings fields (tasks, episodes_per_task,
    ep_len, ...), in process and without videos unless they say otherwise.

    agent: an AgentConfig, a picklable zero-argument factory, or (workers=0) the live agent itself.
    Returns results.json's content: "success_rate", "mean_task_success_rate", "tasks" {task: success,
    total, rate}, "failure_reasons", ...
    """
    s = EvalSettings(**{**IN_PROCESS, **settings, "mode": "single_task"})
    return run_evaluation(s, env or EnvConfig(), agent, output_dir, print_summary=s.progress)


def evaluate_chains(agent: AgentSource, env: EnvConfig | None = None, output_dir: str | Path | None = None,
                    **settings: Any) -> dict[str, Any]:
    """CALVIN's chain evaluation from Python (`settings`: EvalSettings fields, in process and without videos
    unless they say otherwise); returns results.json's content."""
    s = EvalSettings(**{**IN_PROCESS, **settings, "mode": "chains"})
    return run_evaluation(s, env or EnvConfig(), agent, output_dir, print_summary=s.progress)


__all__ = ["evaluate_chains", "evaluate_single_tasks", "run_evaluation"]
