"""Recording CALVIN-format datasets with the scripted expert (`python -m harness.record`, `scripts/collect_data.sh`).

Every episode is one random valid task chain from one of CALVIN's 192 start conditions, run by the
scripted expert with both cameras in the built-in scene or (`env="calvin"`) the real calvin_env; each completed subtask becomes one language
annotation over its frames. Training annotations use the project's varied phrasings, validation ones
CALVIN's evaluation instructions. A frame holds the observation at step t and the action taken at t:
`rel_actions` is the relative command sent to the env, `actions` the absolute target pose it sets.

Episodes are planned from (seed, split, scene, index) alone, recorded by worker processes (one env and
one expert per process; in calvin_env with `exact_reset`, so that an episode starts from its own state and
not with the previous one's gripper action; PyBullet's contact caches still carry over there, so a calvin_env
recording is reproducible to the physics' last digits, a built-in one bit for bit), and committed by the
parent in index order through `CalvinDatasetWriter` (atomic frames, crash-safe metadata). A split's committed
episodes of a scene therefore say exactly which indices are done: running the same command again continues
after them.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field, fields, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import numpy as np
from tqdm import tqdm

from harness.data.calvin_writer import CalvinDatasetWriter, EpisodeRecord, EpisodeWriter, finalize_dataset
from harness.durable_files import atomic_write_text
from harness.envs import BACKENDS
from harness.envs.perturbations import ROLLOUT_AXES, Perturbations, perturbed
from harness.folder_lock import FolderLock
from harness.sim.layout import REL_ORN_SCALE, REL_POS_SCALE, get_layout
from harness.spatial import wrap_angle
from harness.strict_config import from_mapping
from harness.tasks import (
    TASK_CATEGORY,
    TASK_NAMES,
    TaskOracle,
    apply_task,
    eval_instruction,
    initial_state,
    random_condition,
    sample_training_instruction,
    task_spec,
    valid_tasks,
)
from harness.tasks.initial_state import check_condition

SPLIT_IDS = {"training": 0, "validation": 1}
PERTURB_STREAM = 1  # episode_seed's SeedSequence entry beside the plan's (seed, split, scene, index)
MAX_TASK_DRAWS = 1000


@dataclass(frozen=True)
class RecordConfig:
    out: str
    scenes: tuple[str, ...] = ("D",)
    episodes: int = 100  # training episodes per scene
    val_episodes: int = 10  # validation episodes, scene D (as CALVIN's validation split)
    chain_length: int = 5
    tasks: tuple[str, ...] | None = None  # only these tasks (default: all 34)
    ep_len: int = 360  # steps allowed per subtask, as in the evaluation
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)
    seed: int = 0
    embedding_model: str | None = None  # a sentence-embedding model (hub name or folder) for language.emb
    balance: bool = False  # draw tasks with weights that make each about equally frequent (task_weights)
    env: str = "builtin"  # the env backend that records: "builtin" or "calvin" (the real calvin_env)
    # the env's perturbation axes (docs/ROBUSTNESS.md), drawn per episode from its own seed (episode_seed)
    perturb: Perturbations = field(default_factory=Perturbations)

    def __post_init__(self) -> None:
        if self.env not in BACKENDS:
            raise ValueError(f"env must be one of {', '.join(BACKENDS)}, got {self.env!r}")
        if isinstance(self.perturb, dict):
            object.__setattr__(self, "perturb", from_mapping(Perturbations, self.perturb, "perturb"))
        rollout_axes = [axis for axis in ROLLOUT_AXES if getattr(self.perturb, axis)]
        if rollout_axes:
            raise ValueError(f"perturb: {', '.join(rollout_axes)} act in the evaluation's rollout, not in the env a "
                             "recording runs (and the held-out paraphrases must stay out of training data); a "
                             "recording takes the env's axes only (docs/ROBUSTNESS.md)")
        for s in self.scenes:
            get_layout(s)
        if self.episodes < 0 or self.val_episodes < 0:
            raise ValueError("episodes and val_episodes must be >= 0")
        if not 1 <= self.chain_length <= 5:
            raise ValueError(f"chain_length must be 1..5, got {self.chain_length}")
        if self.tasks is not None:
            for t in self.tasks:
                task_spec(t)
        if self.ep_len < 1 or self.workers < 0:
            raise ValueError("ep_len must be >= 1 and workers >= 0")


@dataclass(frozen=True)
class EpisodePlan:
    split: str
    scene: str
    index: int
    condition: dict[str, Any]
    tasks: tuple[str, ...]
    instructions: tuple[str, ...]
    ep_len: int
    seed: int = 0  # the episode's perturbation seed (episode_seed): what `new_chain` gets before its reset


def plan_episode(cfg: RecordConfig, split: str, scene: str, index: int) -> EpisodePlan:
    """A deterministic random chain for episode `index` of `split`/`scene`: a start condition, then
    tasks drawn one at a time among those valid in the symbolic state (and allowed by cfg.tasks), of
    different categories, as CALVIN's chains are; uniformly, or with `cfg.balance` by `task_weights`."""
    rng = np.random.default_rng([cfg.seed, SPLIT_IDS[split], "ABCD".index(get_layout(scene).name), index])
    weights = task_weights(cfg.tasks, cfg.chain_length) if cfg.balance else None
    condition, tasks = _draw_chain(rng, cfg.tasks, cfg.chain_length, weights)
    if split == "validation":
        instructions = tuple(eval_instruction(t) for t in tasks)
    else:
        instructions = tuple(sample_training_instruction(t, rng) for t in tasks)
    return EpisodePlan(split, get_layout(scene).name, index, check_condition(condition), tuple(tasks), instructions,
                       cfg.ep_len, episode_seed(cfg, split, scene, index))


def episode_seed(cfg: RecordConfig, split: str, scene: str, index: int) -> int:
    """The seed episode `index` of `split`/`scene` draws its perturbations from (a stream of its own, apart
    from the plan's): a perturbed dataset's episodes are perturbed each their own way, and reproducibly."""
    scene_id = "ABCD".index(get_layout(scene).name)
    return int(np.random.SeedSequence([cfg.seed, SPLIT_IDS[split], scene_id, index, PERTURB_STREAM]).generate_state(1)[0])


def _draw_chain(rng: np.random.Generator, allowed: tuple[str, ...] | None, length: int,
                weights: dict[str, float] | None) -> tuple[dict[str, Any], list[str]]:
    for _ in range(MAX_TASK_DRAWS):
        condition = random_condition(rng)
        state, tasks, categories = dict(condition), [], set()
        while len(tasks) < length:
            options = [t for t in valid_tasks(state) if TASK_CATEGORY[t] not in categories and (allowed is None or t in allowed)]
            if not options:
                break
            if weights is None:
                task = options[int(rng.integers(len(options)))]
            else:
                w = np.array([weights[t] for t in options])
                task = options[int(rng.choice(len(options), p=w / w.sum()))]
            tasks.append(task)
            categories.add(TASK_CATEGORY[task])
            state = apply_task(state, task)
        if tasks:
            return condition, tasks
    raise ValueError(f"no start condition allows any of the tasks {sorted(allowed or [])}")


BALANCE_CHAINS = 2000  # chains simulated (symbolically) per round of task_weights
BALANCE_ROUNDS = 5


@lru_cache(maxsize=8)
def task_weights(allowed: tuple[str, ...] | None, length: int) -> dict[str, float]:
    """Draw weights under which the allowed tasks are about equally frequent in recorded chains.

    Uniform draws among the valid tasks make some tasks far more frequent than others (place_in_slider
    is valid after every lift, lift_*_block_drawer only with a block in an open drawer): in 1000 chains of
    5, ~440 vs ~20. Each round simulates chains symbolically under the current weights (a fixed seed: the
    weights are a function of the allowed tasks and the chain length only) and divides each task's
    weight by its frequency; a task that needs a rare state stays rarer, but far less so."""
    names = tuple(t for t in TASK_NAMES if allowed is None or t in allowed)
    weights = dict.fromkeys(names, 1.0)
    for round_ in range(BALANCE_ROUNDS):
        rng = np.random.default_rng([7919, round_])
        counts = Counter(t for _ in range(BALANCE_CHAINS) for t in _draw_chain(rng, allowed, length, weights)[1])
        mean = sum(counts.values()) / len(names)
        weights = {t: weights[t] * mean / max(counts[t], 1) for t in names}
    return weights


# ------------------------------------------------------------------------------------------ workers

_WORKER: dict[str, Any] = {}


def _worker_tools(backend: str, scene: str, perturb: Perturbations) -> tuple[Any, Any, TaskOracle]:
    """One env (both cameras) and one expert per process, for one backend, scene and perturbation, built on first use."""
    if (backend, scene, perturb) not in _WORKER:
        from agents.scripted import ScriptedExpert
        from harness.envs import make_env

        close_worker_tools()
        # calvin_env's own reset keeps the previous episode's gripper action (robot_obs[14] of frame 0 would be
        # another episode's, and the expert would start by opening): an episode is recorded from its own state
        exact = {"exact_reset": True} if backend == "calvin" else {}
        env, expert = perturbed(make_env(backend, scene=scene, **exact), perturb), ScriptedExpert()
        expert.bind_env(env.description)
        _WORKER[backend, scene, perturb] = (env, expert, TaskOracle())
    return _WORKER[backend, scene, perturb]


def close_worker_tools() -> None:
    """Close this process's recording env (calvin_env holds ~200 MiB and a PyBullet client)."""
    for env, _, _ in _WORKER.values():
        env.close()
    _WORKER.clear()


@dataclass(frozen=True)
class EpisodeResult:
    record: EpisodeRecord
    completed: tuple[str, ...]
    failed: str | None


def record_episode(plan: EpisodePlan, staging_dir: str, backend: str = "builtin",
                   perturb: Perturbations = Perturbations()) -> EpisodeResult:
    """Run one plan in the env `backend` and write its frames into a staging folder (safe in a worker process).
    A perturbed env draws the episode's perturbations from `plan.seed`; the frames hold what it observed,
    `rel_actions` what the expert commanded, and `actions` the target pose the env then had (with action noise,
    the noisy command moved it: the commanded one would drift from it by the noise's running sum)."""
    env, expert, oracle = _worker_tools(backend, plan.scene, perturb)
    writer = EpisodeWriter(staging_dir, f"calvin_scene_{plan.scene}")
    try:
        if hasattr(env, "new_chain"):
            env.new_chain(plan.seed)
        obs = env.reset(*initial_state(plan.condition, plan.scene))
        # the env's internal target pose: the TCP after a reset, then moved by every relative action
        target = np.array(obs["robot_obs"][:6], dtype=np.float64)
        completed: list[str] = []
        failed = None
        expert.new_chain(plan.index)  # the worker's expert recorded other episodes before this one
        for task, instruction in zip(plan.tasks, plan.instructions):
            expert.reset()
            start_info, first = env.get_info(), writer.num_frames
            for _ in range(plan.ep_len):
                action = expert.step(obs, instruction)
                after, _, _, info = env.step(action)
                executed = getattr(env, "executed_action", action)  # a PerturbedEnv's, noise and all
                target += np.r_[executed[:3] * REL_POS_SCALE, executed[3:6] * REL_ORN_SCALE]
                writer.add_frame(
                    rgb_static=obs["rgb_obs"]["rgb_static"], rgb_gripper=obs["rgb_obs"]["rgb_gripper"],
                    depth_static=obs["depth_obs"]["depth_static"], depth_gripper=obs["depth_obs"]["depth_gripper"],
                    actions=np.r_[target[:3], wrap_angle(target[3:6]), action[6]], rel_actions=action,
                    robot_obs=obs["robot_obs"], scene_obs=obs["scene_obs"],
                )
                obs = after
                if oracle.is_completed(task, start_info, info):
                    writer.add_annotation(first, writer.num_frames - 1, instruction, task)
                    completed.append(task)
                    break
            else:
                failed = task
                break
        return EpisodeResult(writer.finish(), tuple(completed), failed)
    except BaseException:
        writer.discard()
        raise


def _record(job: tuple[EpisodePlan, str, str, Perturbations]) -> EpisodeResult:
    return record_episode(*job)


# ------------------------------------------------------------------------------------------ the parent


def committed_episodes(writer: CalvinDatasetWriter, scene: str) -> int:
    """How many episodes of `scene` the split already holds (they are committed in index order)."""
    key = f"calvin_scene_{get_layout(scene).name}"
    if key not in writer.scene_info:
        return 0
    first, last = writer.scene_info[key]
    return sum(1 for s, e in writer.episodes if first <= s <= last)


def _plans(cfg: RecordConfig) -> Iterator[tuple[str, str, int]]:
    for scene in cfg.scenes:
        yield "training", scene, cfg.episodes
    if cfg.val_episodes:
        yield "validation", "D", cfg.val_episodes


def record_dataset(cfg: RecordConfig, progress: bool = True) -> dict[str, Any]:
    """Record (or continue recording) the dataset; returns a summary of what this call recorded."""
    root = Path(cfg.out)
    root.mkdir(parents=True, exist_ok=True)
    # one recording a folder: each split's writer locks its split, but two recordings would both rewrite
    # recording.json and could each pass the other's checks
    with FolderLock(root, "recorded by another harness.record"):
        return _record_locked(root, cfg, progress)


def _record_locked(root: Path, cfg: RecordConfig, progress: bool) -> dict[str, Any]:
    settings = _check_same_config(root, cfg)
    for split in sorted({split for split, _, _ in _plans(cfg)}, key=SPLIT_IDS.get):
        with CalvinDatasetWriter(root, split) as writer:
            _check_extension(cfg, split, writer)
    # once the counts are known to be possible
    atomic_write_text(root / "recording.json", json.dumps(settings, indent=2))
    embedder = _embedder(cfg.embedding_model)
    summary: dict[str, Any] = {"episodes": 0, "frames": 0, "annotations": 0, "failed_subtasks": {}}
    # a process pool that notices a dead worker (BrokenProcessPool; multiprocessing.Pool waited forever)
    pool = ProcessPoolExecutor(cfg.workers, mp_context=mp.get_context("spawn")) if cfg.workers > 1 else None
    try:
        splits = {split for split, _, _ in _plans(cfg)}
        for split in sorted(splits, key=SPLIT_IDS.get):
            with CalvinDatasetWriter(root, split) as writer:
                try:
                    _record_split(cfg, split, writer, pool, embedder, summary, progress)
                except BaseException:
                    # a failed episode, a dead worker, Ctrl-C: the queued episodes are dropped, the running ones
                    # end before the writer lets go of the split (committed episodes stay; a rerun goes on)
                    if pool is not None:
                        pool.shutdown(wait=True, cancel_futures=True)
                    raise
        if embedder is not None:
            _write_eval_embeddings(root, embedder)
        finalize_dataset(root)
    finally:
        if pool is not None:
            pool.shutdown()
        else:
            close_worker_tools()
    return summary


def _record_split(cfg: RecordConfig, split: str, writer: CalvinDatasetWriter, pool: ProcessPoolExecutor | None,
                  embedder: Any, summary: dict[str, Any], progress: bool) -> None:
    """The split's episodes not yet committed, scene by scene, each committed in index order as it arrives."""
    for _, scene, count in (p for p in _plans(cfg) if p[0] == split):
        done = committed_episodes(writer, scene)
        jobs = [(plan_episode(cfg, split, scene, i), str(writer.staging_dir), cfg.env, cfg.perturb)
                for i in range(done, count)]
        results = pool.map(_record, jobs) if pool is not None else map(_record, jobs)
        bar = tqdm(results, total=len(jobs), desc=f"{split} {scene}", disable=not progress, unit="ep")
        for result in bar:
            writer.commit(_with_embeddings(result.record, embedder))
            _tally(summary, result)
            bar.set_postfix(frames=summary["frames"], failed=sum(summary["failed_subtasks"].values()))


def _tally(summary: dict[str, Any], result: EpisodeResult) -> None:
    summary["episodes"] += 1
    summary["frames"] += result.record.num_frames
    summary["annotations"] += len(result.record.annotations)
    if result.failed is not None:
        summary["failed_subtasks"][result.failed] = summary["failed_subtasks"].get(result.failed, 0) + 1


def _check_extension(cfg: RecordConfig, split: str, writer: CalvinDatasetWriter) -> None:
    """More episodes than a split holds can be recorded only for its last scene with episodes: a split keeps each
    scene's episodes in one range of frame ids. Fewer than it holds: the extra ones stay, and it is said."""
    scenes = [(scene, count, committed_episodes(writer, scene)) for s, scene, count in _plans(cfg) if s == split]
    for k, (scene, count, done) in enumerate(scenes):
        later = [other for other, _, other_done in scenes[k + 1:] if other_done]
        if count > done and later:
            raise ValueError(f"{writer.path} holds {done} episodes of scene {scene} and episodes of scene "
                             f"{', '.join(later)} after them; {count} of {scene} cannot be added there (a split keeps "
                             "each scene's episodes together): record the extra episodes into a new folder")
        if done > count:
            print(f"{split}: scene {scene} holds {done} episodes, more than the {count} asked; they are kept", flush=True)


def _check_same_config(root: Path, cfg: RecordConfig) -> dict[str, Any]:
    """A dataset is continued only with the settings it was started with (they decide the plans); returns the
    settings to record in recording.json."""
    path = root / "recording.json"
    mine = {k: v for k, v in asdict(cfg).items() if k not in ("out", "workers", "perturb")}
    if cfg.perturb.any():  # an unperturbed recording's settings are what they always were
        mine["perturb"] = cfg.perturb.active()
    mine = json.loads(json.dumps(mine))
    if path.exists():
        try:
            theirs = json.loads(path.read_text())
        except ValueError as e:
            raise ValueError(f"{path} cannot be read ({e}): it says how {root} was recorded; use a new folder") from None
        if not isinstance(theirs, dict):
            raise ValueError(f"{path} holds a {type(theirs).__name__}, not the recording's settings; use a new folder")
        defaults = {f.name: f.default for f in fields(RecordConfig)}  # a setting added later: its default then
        differ = {k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k, defaults.get(k))
                  and k not in ("episodes", "val_episodes", "episode_seeds", "perturbations")}
        if differ:
            raise ValueError(f"{root} was recorded with other settings ({', '.join(sorted(differ))}); use a new folder")
    if cfg.perturb.any():
        mine["perturbations"] = cfg.perturb.describe()
        mine["episode_seeds"] = {split: {scene: [episode_seed(cfg, split, scene, i) for i in range(count)]
                                         for s, scene, count in _plans(cfg) if s == split}
                                 for split in dict.fromkeys(s for s, _, _ in _plans(cfg))}
    return mine


def _embedder(name: str | None):
    if name is None:
        return None
    from harness.data.lang_embedding import SentenceEmbedder

    return SentenceEmbedder(name)


def _with_embeddings(record: EpisodeRecord, embedder) -> EpisodeRecord:
    if embedder is None or not record.annotations:
        return record
    embs = embedder([a.ann for a in record.annotations])
    return replace(record, annotations=tuple(replace(a, emb=e) for a, e in zip(record.annotations, embs)))


def _write_eval_embeddings(root: Path, embedder) -> None:
    """validation/lang_annotations/embeddings.npy: per task, its evaluation instruction and embedding."""
    folder = root / "validation" / "lang_annotations"
    if not folder.parent.exists():
        return
    folder.mkdir(parents=True, exist_ok=True)
    texts = [eval_instruction(t) for t in TASK_NAMES]
    embs = embedder(texts)
    table = {t: {"emb": e[None, :], "ann": [text]} for t, text, e in zip(TASK_NAMES, texts, embs)}
    np.save(folder / "embeddings.npy", table, allow_pickle=True)


__all__ = ["EpisodePlan", "RecordConfig", "episode_seed", "plan_episode", "record_dataset", "record_episode"]
