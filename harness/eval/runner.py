"""Runs jobs (chains or single-task episodes) in N worker processes, or in this process (workers=0).

Each worker builds its own agent, then its own env with only the cameras the agent declares
(`cameras=agent.spec.cameras`: none for the scripted expert, so no frame is ever rendered) and binds
the agent to it (`EnvConfig.build_for`). The parent
hands out one job at a time to whichever worker is free (a dynamic queue: long chains do not hold up
the rest) and gets back one record per job. Videos the parent queues (`VideoQueue`) go to a render
process of their own, started with the first one, so they are made while the rollouts go on without
holding up a worker (a GPU agent's worker, say); once no job is left to hand out, idle workers render too.

Faults:
  * the env raises inside a chain: the worker rebuilds its env and runs the chain again from its start;
    if it fails again the chain is recorded with `env_error` at the subtask where it failed, and the
    evaluation goes on;
  * a worker process dies (segfault, OOM kill), or is still on one chain after `job_timeout_s` (a hung
    agent or env) and is killed: it is replaced and its chain handed out again; a chain that costs two
    workers is recorded as `env_error` at the subtask its second run died in (the worker reports each
    finished subtask to the parent, so the successes before it count);
  * a worker that cannot build its env or agent at all stops the evaluation with that error (a missing
    package or checkpoint is not something to retry);
  * the agent's policy server goes away (`AgentUnavailable`, a remote agent): the worker waits for it to
    come back (`agent.wait_until_available`) and runs the chain again from its start, on a new env when
    `fresh_per_chain`, so the chain ends as if nothing had happened; a server that stays away past the
    agent's reconnect_timeout_s stops the evaluation (the results so far are kept, a rerun resumes).
"""

from __future__ import annotations

import hashlib
import math
import multiprocessing as mp
import pickle
import sys
import time
import traceback
from collections import deque
from dataclasses import asdict, dataclass, field, replace
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from agents import Agent, AgentUnavailable
from harness.envs import Env
from harness.eval.jobs import Job
from harness.eval.rollout import ChainRun, EnvFailure, SetupFailed, SubtaskOutcome, SubtaskTrace, preserved_global_rngs, run_chain
from harness.eval.specs import AgentSource, EnvConfig, build_agent, is_live_agent
from harness.eval.video import VideoJob, VideoQueue, VideoRenderer, render_process_main
from harness.lifetime import end_with_parent
from harness.ranks import rank_cores, torch_threads
from harness.tasks import TaskOracle

MAX_ATTEMPTS = 2  # a chain is run at most twice when its env fails (and handed out at most twice on worker death)
MAX_OUTAGES = 3  # a chain is run at most 3 times when the agent's server goes away during it


@dataclass(frozen=True)
class RunSettings:
    ep_len: int = 360
    video_chains: int = 0  # keep the traces of jobs with index < this (full chains)
    video_failures: bool = False  # keep the trace of the failed subtask of any failing job
    threads: int = 1  # torch CPU threads per worker, when the agent uses torch (0: leave them as they are)
    job_timeout_s: float | None = None  # a worker still on one job after this long is killed (a hung agent or env)
    instructions: Mapping[str, str] = field(default_factory=dict)  # task -> instruction instead of CALVIN's


Result = tuple[dict[str, Any], list[SubtaskTrace] | None]
OnResult = Callable[[dict[str, Any], "list[SubtaskTrace] | None"], None]


def completed_count(outcomes: Sequence[SubtaskOutcome] | Sequence[dict[str, Any]]) -> int:
    """Consecutive successes from the first subtask (CALVIN's score of a chain, 0..5)."""
    n = 0
    for o in outcomes:
        if not (o.success if isinstance(o, SubtaskOutcome) else o["success"]):
            break
        n += 1
    return n


def state_digest(state: tuple[np.ndarray, np.ndarray] | None) -> str | None:
    """A fingerprint of the final (robot_obs, scene_obs): equal digests mean bit-identical end states."""
    if state is None:
        return None
    h = hashlib.sha1()
    for arr in state:
        h.update(np.ascontiguousarray(arr, dtype=np.float64).tobytes())
    return h.hexdigest()[:16]


def job_record(job: Job, outcomes: list[SubtaskOutcome], attempts: int, clock: tuple[float, float] | None = None,
               final_state: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
    """One line of results.jsonl. clock: (perf_counter, process_time) when the job started."""
    wall_s, cpu_s = (time.perf_counter() - clock[0], time.process_time() - clock[1]) if clock else (0.0, 0.0)
    return {
        **job.to_dict(),
        "completed": completed_count(outcomes),
        "subtasks": [o.to_dict() for o in outcomes],
        "steps": sum(o.steps for o in outcomes),
        "out_of_range": sum(o.out_of_range for o in outcomes),
        "attempts": attempts,
        "final_state": state_digest(final_state),
        "wall_s": round(wall_s, 3),
        "cpu_s": round(cpu_s, 3),  # this process's CPU time: below wall_s when it waited for a core (or a GPU)
    }


def crash_record(job: Job, cause: str, done: Sequence[SubtaskOutcome] = (), ran: Job | None = None) -> dict[str, Any]:
    """The record of a job whose worker died on it twice: the subtasks its last run finished (`done`, as the
    worker reported them, of the job as it ran: `ran`, a redrawn setup's), then `env_error` at the one it died
    in, as after an env that raised twice."""
    job = ran or job
    outcomes = list(done)
    if len(outcomes) < len(job.tasks) and all(o.success for o in outcomes):
        message = f"the worker process running this chain {cause}"
        outcomes.append(SubtaskOutcome(job.tasks[len(outcomes)], False, 0, "env_error", message))
    return job_record(job, outcomes, MAX_ATTEMPTS)


def _spec_dict(agent: Agent) -> dict[str, Any]:
    d = asdict(agent.spec)
    d["cameras"] = list(agent.spec.cameras)
    return d


class JobRunner:
    """One agent and one env, running jobs with the env-failure retry. Used in workers and in-process."""

    def __init__(self, env_cfg: EnvConfig, agent: AgentSource, settings: RunSettings,
                 on_wait: Callable[[bool], None] | None = None,
                 on_outcome: Callable[[Job | None, list[SubtaskOutcome]], None] | None = None) -> None:
        self.env_cfg, self.settings = env_cfg, settings
        self.on_wait = on_wait or (lambda waiting: None)  # told when it waits for the agent's server, and after
        # told each run's job as run and outcomes so far (None, [] as it starts)
        self.on_outcome = on_outcome or (lambda job, outcomes: None)
        self.agent = build_agent(agent)
        self.owns_agent = not is_live_agent(agent)  # an agent handed in built is its caller's to close
        torch = sys.modules.get("torch")
        if torch is not None and settings.threads > 0:
            torch.set_num_threads(settings.threads)
        self.env: Env | None = self.env_cfg.build_for(self.agent)
        self.env_used = False
        self.oracle = TaskOracle()
        self.renderer = VideoRenderer(env_cfg)

    def describe(self) -> dict[str, Any]:
        return {"env": self.env.description.to_dict(), "agent": _spec_dict(self.agent)}

    def run(self, job: Job) -> Result:
        record_states = job.index < self.settings.video_chains or self.settings.video_failures
        clock = (time.perf_counter(), time.process_time())
        if self.env_used and self.env_cfg.fresh_per_chain:
            self._rebuild_env()
        self.env_used = True
        failures: list[EnvFailure] = []
        outages = 0
        while len(failures) < MAX_ATTEMPTS:
            self.on_outcome(None, [])
            try:
                chain = run_chain(self.env, self.agent, job, self.settings.ep_len, self.oracle, record_states,
                                  self.settings.instructions, self.on_outcome)
            except SetupFailed as e:  # the same draws again would fail the same way
                return job_record(e.job or job, e.outcomes(), len(failures) + 1, clock), None
            except EnvFailure as e:
                failures.append(e)
                self._rebuild_env()
                continue
            except AgentUnavailable as e:
                outages += 1
                if outages >= MAX_OUTAGES:  # a chain that brings the server down each time (an OOM) ends
                    return self._lost_to_outages(job, outages, len(failures) + 1, e, clock), None
                self._wait_for_agent(e)
                if self.env_cfg.fresh_per_chain:
                    self._rebuild_env()
                continue
            record = job_record(chain.job, chain.outcomes, len(failures) + 1, clock, chain.final_state)
            return record, self._kept_traces(job, chain)
        return job_record(failures[-1].job or job, failures[-1].outcomes(), MAX_ATTEMPTS, clock), None

    def _lost_to_outages(self, job: Job, outages: int, attempts: int, error: AgentUnavailable,
                         clock: tuple[float, float]) -> dict[str, Any]:
        """The chain's record when the agent's server went away every time it ran: its first subtask fails
        with agent_error (what it did before each outage is not kept), and the evaluation goes on."""
        message = f"the agent's server went away {outages} times while this chain ran (MAX_OUTAGES): {error}"
        print(f"[eval] chain {job.index}: {message}", file=sys.stderr, flush=True)
        outcome = SubtaskOutcome(job.tasks[0], False, 0, "agent_error", message[-500:])
        return job_record(job, [outcome], attempts, clock)  # attempts: the env's (an outage is not one)

    def _wait_for_agent(self, error: AgentUnavailable) -> None:
        """Block until the agent's server answers again (AgentUnavailable when it does not in time)."""
        wait = getattr(self.agent, "wait_until_available", None)
        if wait is None:
            raise error
        print(f"[eval] {error}; waiting for it, then running the chain again", file=sys.stderr, flush=True)
        self.on_wait(True)  # the time waiting is not the job's (job_timeout_s): its clock starts again after
        wait()
        self.on_wait(False)

    def _rebuild_env(self) -> None:
        try:
            self.env.close()
        except Exception:  # noqa: BLE001 - a broken env may not close cleanly; a new one is built anyway
            pass
        self.env = self.env_cfg.build_for(self.agent)

    def _kept_traces(self, job: Job, chain: ChainRun) -> list[SubtaskTrace] | None:
        """Full traces for the first video chains; only the failed subtask's for other failing jobs."""
        if chain.traces is None:
            return None
        if job.index < self.settings.video_chains:
            return chain.traces
        failed = chain.outcomes and not chain.outcomes[-1].success
        return chain.traces[-1:] if failed and self.settings.video_failures and chain.traces else None

    def render_queued(self, videos: VideoQueue) -> None:
        while videos.pending:
            videos.finished(self.renderer.try_render(videos.pending.popleft()))

    def close(self) -> None:
        self.renderer.close()
        if self.env is not None:
            self.env.close()
            self.env = None
        close_agent = getattr(self.agent, "close", None)  # a remote agent's connection (its server session)
        if self.owns_agent and close_agent is not None:
            close_agent()


def _worker_main(conn: Connection, env_cfg: EnvConfig, agent: AgentSource, settings: RunSettings) -> None:
    """A worker process: build, say ready, then run jobs and render videos until told to stop or the parent goes away."""
    end_with_parent()  # also mid-chain: a parent killed outright can record nothing more
    try:
        runner = JobRunner(env_cfg, agent, settings, on_wait=lambda waiting: conn.send(("waiting", waiting)),
                           on_outcome=lambda ran, outcomes: conn.send(("outcomes", (ran, outcomes))))
        conn.send(("ready", runner.describe()))
    except BaseException:  # noqa: BLE001 - reported to the parent, which stops the evaluation
        conn.send(("fatal", traceback.format_exc()))
        return
    try:
        while True:
            task = conn.recv()
            if task is None:
                break
            if isinstance(task, VideoJob):
                conn.send(("video", runner.renderer.try_render(task)))
            else:
                conn.send(("result", runner.run(task)))
    except (EOFError, BrokenPipeError, KeyboardInterrupt):
        pass  # the parent is gone or interrupted: nothing left to report to
    except BaseException:  # noqa: BLE001
        try:
            conn.send(("fatal", traceback.format_exc()))
        except (EOFError, BrokenPipeError):
            pass
    finally:
        runner.close()


class WorkerError(RuntimeError):
    """A worker could not build its env or agent, or failed outside any chain."""


@dataclass(eq=False)  # compared and hashed by identity
class _Slot:
    process: Any
    conn: Connection
    job: Job | None = None
    video: VideoJob | None = None
    ready: bool = False
    since: float = 0.0  # when the current job was handed out
    # the current job's last run as the worker reported it: the job as run, and the subtasks it finished
    done: tuple[Job | None, list[SubtaskOutcome]] = field(default_factory=lambda: (None, []))
    killed_for_time: bool = False
    renders_only: bool = False  # the render process


class WorkerPool:
    """N spawned worker processes sharing a queue of jobs, and (started with the first video) a render process."""

    def __init__(self, workers: int, env_cfg: EnvConfig, agent: AgentSource, settings: RunSettings) -> None:
        if is_live_agent(agent):
            raise ValueError("a live agent object can only run in-process (workers=0); pass an AgentConfig or a factory")
        try:
            pickle.dumps((env_cfg, agent))
        except Exception as e:  # noqa: BLE001 - lambdas and closures cannot reach a spawned process
            raise ValueError(
                f"worker processes build the agent from a picklable description ({e}): pass an AgentConfig or a "
                "module-level factory function, or run in-process with workers=0"
            ) from e
        self.env_cfg, self.agent, self.settings = env_cfg, agent, settings
        self.ctx = mp.get_context("spawn")  # no fork: PyBullet clients and CUDA do not survive one
        self.description: dict[str, Any] | None = None
        self.slots = [self._start() for _ in range(workers)]
        self.crashes: dict[str, int] = {}
        self.videos = VideoQueue()

    def _start(self, renders_only: bool = False) -> _Slot:
        parent, child = self.ctx.Pipe()
        target, args = ((render_process_main, (child, self.env_cfg)) if renders_only
                        else (_worker_main, (child, self.env_cfg, self.agent, self.settings)))
        proc = self.ctx.Process(target=target, args=args, daemon=True)
        proc.start()
        child.close()
        return _Slot(proc, parent, ready=renders_only, renders_only=renders_only)

    def wait_ready(self) -> dict[str, Any]:
        """Block until every worker has built its env and agent; returns the first one's description."""
        while not all(s.ready for s in self.slots):
            self._serve(deque(), lambda *a: None)
        return self.description

    def run(self, jobs: Sequence[Job], on_result: OnResult, videos: VideoQueue | None = None) -> None:
        """Until every job is done and every video queued (also by on_result) is rendered."""
        pending = deque(jobs)
        self.videos = videos if videos is not None else VideoQueue()
        while pending or self.videos.pending or any(s.job is not None or s.video is not None for s in self.slots):
            self._hand_out(pending)
            self._serve(pending, on_result)

    def _hand_out(self, pending: deque[Job]) -> None:
        """Jobs to free workers; videos to the render process (started now if there is none), and to free
        workers once no job is left for them."""
        if self.videos.pending and not any(s.renders_only for s in self.slots):
            self.slots.append(self._start(renders_only=True))
        for slot in self.slots:
            if not slot.ready or slot.job is not None or slot.video is not None:
                continue
            try:
                if self.videos.pending and (slot.renders_only or not pending):
                    slot.video = self.videos.pending.popleft()
                    slot.conn.send(slot.video)
                elif pending and not slot.renders_only:
                    slot.job, slot.since, slot.done = pending.popleft(), time.monotonic(), (None, [])
                    slot.conn.send(slot.job)
            except (BrokenPipeError, ConnectionResetError):  # it died while idle and never got it: handed to
                if slot.job is not None:                      # another worker (the dead one is replaced when
                    pending.appendleft(slot.job)              # its sentinel fires)
                if slot.video is not None:
                    self.videos.pending.appendleft(slot.video)
                slot.job = slot.video = None

    def _serve(self, pending: deque[Job], on_result: OnResult) -> None:
        """Wait for a message from, or the death of, any worker, and handle what arrived."""
        owners = {}
        for slot in self.slots:
            owners[slot.conn] = owners[slot.process.sentinel] = slot
        for slot in dict.fromkeys(owners[r] for r in wait(list(owners), timeout=self._time_to_next_deadline())):
            if not self._receive(slot, on_result):
                self._replace(slot, pending, on_result)

    def _time_to_next_deadline(self) -> float | None:
        """Kill the workers that are over the job time limit; the time until the next one could be."""
        limit = self.settings.job_timeout_s
        if not limit:
            return None
        now, nearest = time.monotonic(), limit
        for slot in self.slots:
            if slot.job is None or slot.killed_for_time:
                continue
            left = slot.since + limit - now
            if left <= 0:
                slot.killed_for_time = True
                slot.process.kill()  # its sentinel fires next, and _replace hands the job out again
            else:
                nearest = min(nearest, left)
        return max(nearest, 0.01)

    def _receive(self, slot: _Slot, on_result: OnResult) -> bool:
        """Handle every message waiting from a worker; False when the worker is gone."""
        try:
            while slot.conn.poll():
                kind, payload = slot.conn.recv()
                if kind == "ready":
                    slot.ready = True
                    self.description = self.description or payload
                elif kind == "result":
                    slot.job = None
                    record, traces = payload
                    if deaths := self.crashes.get(record["key"]):  # run again after its worker died: said
                        record = {**record, "worker_deaths": deaths}
                    on_result(record, traces)
                elif kind == "video":
                    slot.video = None
                    self.videos.finished(payload)
                elif kind == "waiting":  # for the agent's server: no time limit meanwhile, a new one after
                    slot.since = math.inf if payload else time.monotonic()
                elif kind == "outcomes":
                    slot.done = payload
                else:
                    raise WorkerError(f"an evaluation worker failed:\n{payload}")
        except (EOFError, ConnectionResetError, OSError):
            return False
        return slot.process.is_alive()

    def _replace(self, slot: _Slot, pending: deque[Job], on_result: OnResult) -> None:
        slot.process.join(timeout=5)
        exitcode = slot.process.exitcode
        if not slot.ready:
            raise WorkerError(f"an evaluation worker died while starting (exit code {exitcode})")
        slot.video = None  # a video it was rendering is rendered at the end of the evaluation
        if slot.renders_only:  # started again with the next video
            slot.conn.close()
            self.slots.remove(slot)
            return
        job, slot.job = slot.job, None
        if job is not None:
            self.crashes[job.key] = self.crashes.get(job.key, 0) + 1
            if self.crashes[job.key] >= MAX_ATTEMPTS:
                cause = (f"ran past job_timeout_s={self.settings.job_timeout_s:g} twice" if slot.killed_for_time
                         else f"died twice (exit code {exitcode})")
                ran, done = slot.done
                on_result(crash_record(job, cause, done, ran), None)
            else:
                pending.appendleft(job)
        slot.conn.close()
        self.slots[self.slots.index(slot)] = self._start()

    def close(self, grace_s: float = 10.0) -> None:
        """Tell the workers to stop; terminate those still busy after `grace_s` seconds."""
        for slot in self.slots:
            try:
                slot.conn.send(None)
            except (OSError, BrokenPipeError):
                pass
        deadline = time.monotonic() + grace_s
        for slot in self.slots:
            slot.process.join(timeout=max(0.0, deadline - time.monotonic()))
            if slot.process.is_alive():
                slot.process.terminate()
                slot.process.join(timeout=5)
            slot.conn.close()

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: Any) -> None:
        self.close(grace_s=10.0 if exc_type is None else 0.0)  # stopped (SIGTERM, Ctrl-C, an error): at once


def run_jobs(jobs: Sequence[Job], env_cfg: EnvConfig, agent: AgentSource, settings: RunSettings, workers: int,
             on_result: OnResult, on_ready: Callable[[dict[str, Any]], None] | None = None,
             videos: VideoQueue | None = None) -> None:
    """Run the jobs; `on_result(record, traces)` is called in this process for each finished job, in
    finishing order. `on_ready(description)` once the env and agent are built (before any result).
    `videos`: videos to render beside the jobs (on_result may queue more); in this process (workers=0)
    they are rendered between jobs."""
    if workers < 0:
        raise ValueError(f"workers must be >= 0, got {workers}")
    if workers == 0:
        with preserved_global_rngs():
            runner = JobRunner(env_cfg, agent, replace(settings, threads=0))  # the caller's thread settings stay
            try:
                if on_ready:
                    on_ready(runner.describe())
                for job in jobs:
                    if videos is not None:
                        runner.render_queued(videos)
                    on_result(*runner.run(job))
                if videos is not None:
                    runner.render_queued(videos)
            finally:
                runner.close()
        return
    with WorkerPool(min(workers, max(len(jobs), 1)), env_cfg, agent, settings) as pool:
        description = pool.wait_ready()
        if on_ready:
            on_ready(description)
        pool.run(jobs, on_result, videos)


def default_threads(workers: int, local_world: int = 1) -> int:
    """CPU threads per worker for torch agents: the rank's cores shared out, at least one, at most
    OMP_NUM_THREADS (harness.ranks.torch_threads)."""
    return torch_threads(rank_cores(local_world) // max(1, workers))
