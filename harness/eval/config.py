"""The evaluation's config, the same dataclasses for both callers: the command line (configs/eval.yaml) and the
rollouts during training (harness/train/config.py's RolloutConfig, configs/rollout/).

    configs/eval.yaml, top level   -> EvalSettings (below; its defaults are the command's)
    configs/eval.yaml, env.*       -> EnvConfig (harness/eval/specs.py; configs/env/*.yaml)
    configs/eval.yaml, agent.*     -> AgentConfig: `name` (or `factory`) + the agent's keyword arguments

Parsing is strict (harness/strict_config.py): an unknown key or a mistyped value is an error naming it.
`python -m harness.eval --cfg job` prints every setting with its value. This module imports neither
pybullet nor torch: the training parses its rollout settings without either (pybullet changes nothing in
a training run that has no rollouts).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping, Sequence

from agents.vla.layout import WEIGHTS, checkpoint_digest
from harness.eval.jobs import Job, chain_jobs, single_task_jobs
from harness.eval.specs import AgentConfig, AgentSource, EnvConfig, describe_agent_source, is_live_agent
from harness.hydra_app import store_defaults
from harness.strict_config import from_mapping, plain
from harness.tasks.catalog import check_task_names

MODES = ("chains", "single_task")
DEFAULT_VIDEO_FAILURES = 10  # video_failures: true
SERVER_MODES = ("auto", "on", "off")  # harness/eval/served.py
# agent settings that are not what the agent is, left out of the run key (run.json): where it runs (cpu,
# cuda:N per rank), how long a remote agent waits to connect, and its server's token (a secret, never written)
NOT_THE_AGENT = ("device", "token", "connect_timeout_s", "reconnect_timeout_s")


@dataclass(frozen=True)
class ServerOptions:
    """server_options.*: the evaluation's policy server (harness/eval/served.py; docs/SERVING.md)."""

    max_batch: int = 16  # observations of different workers stepped together, at most
    # Longer than an env step: a worker's next observation joins the batch the other workers wait in,
    # instead of the workers falling into turns of one-observation batches.
    max_wait_ms: float = 20.0
    threads: int = 0  # the server's torch CPU threads (0: the rank's cores the env workers leave, at least 1, at most OMP_NUM_THREADS)
    timeout_s: float = 300.0  # a worker waits this long for one action (then: agent_error)
    reconnect_timeout_s: float = 600.0  # a server that went away: how long workers wait for it

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.max_wait_ms < 0 or self.threads < 0:
            raise ValueError(f"server_options: max_batch >= 1, max_wait_ms >= 0 and threads >= 0, got {self}")
        if not self.timeout_s > 0 or not self.reconnect_timeout_s > 0:
            raise ValueError(f"server_options: timeout_s and reconnect_timeout_s must be > 0, got {self}")


@dataclass(frozen=True)
class EvalSettings:
    """How an evaluation runs. The defaults are the command line's (configs/eval.yaml builds on them);
    training rollouts start from `RolloutConfig`'s (harness/train/config.py)."""

    mode: str = "chains"  # chains: CALVIN's benchmark chains | single_task: episodes per task
    num_chains: int = 100  # the first N of CALVIN's 1000 evaluation chains (1000 = the published protocol)
    tasks: tuple[str, ...] | None = None  # single_task: task names; None = all 34 (seven after a setup: jobs.py)
    episodes_per_task: int = 10  # single_task
    ep_len: int = 360  # steps per subtask (CALVIN: 360)
    workers: int = 2  # worker processes (per torchrun rank); 0 runs in this process
    job_timeout_s: float | None = None  # workers only: a worker stuck this long on one chain is killed, the chain retried once
    seed: int = 0  # chain i is seeded with seed + i
    videos: int | bool = 3  # whole-chain videos of the first K chains (true = 1, false = 0)
    video_failures: int | bool = 5  # clips of the failed subtask of this many failing chains, lowest indices first (true = 10)
    video_format: str = "mp4"  # mp4 | gif
    video_fps: int = 30
    video_stride: int = 1  # render every n-th step
    progress: bool = True
    overwrite: bool = False  # discard earlier results in the output folder instead of resuming
    dist_backend: str = "auto"  # torchrun only: auto (nccl for CUDA agents, else gloo) | gloo | nccl
    dist_timeout_s: float = 48 * 3600.0  # how long ranks wait for each other at the end
    # auto: one policy server for all workers of a rank, instead of a model per worker, when the agent is a model
    # (agent=vla), workers > 1, and the model runs on an accelerator or the workers outnumber the rank's CPU
    # cores (harness/eval/served.py) | on: for any agent config | off
    server: str = "auto"
    server_options: ServerOptions = field(default_factory=ServerOptions)
    # task -> what the agent is told instead of CALVIN's validation instruction (how a policy reads another
    # wording of the same task, docs/EVALUATION.md); the results are then not CALVIN's protocol, and the report says so
    instructions: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name, when_true in (("videos", 1), ("video_failures", DEFAULT_VIDEO_FAILURES)):
            if isinstance(getattr(self, name), bool):
                object.__setattr__(self, name, when_true if getattr(self, name) else 0)
        if self.tasks is not None:
            object.__setattr__(self, "tasks", tuple(self.tasks))
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {self.mode!r}")
        if self.server not in SERVER_MODES:
            raise ValueError(f"server must be one of {SERVER_MODES}, got {self.server!r}")
        for name in ("ep_len", "episodes_per_task", "video_fps", "video_stride"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("num_chains", "workers", "videos", "video_failures"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.video_format not in ("mp4", "gif"):
            raise ValueError(f"video_format must be 'mp4' or 'gif', got {self.video_format!r}")
        try:
            check_task_names(self.instructions)
        except ValueError as e:
            raise ValueError(f"instructions: {e}") from None
        empty = [task for task, text in self.instructions.items() if not isinstance(text, str) or not text.strip()]
        if empty:
            raise ValueError(f"instructions: the text for {', '.join(empty)} must be a non-empty string")
        object.__setattr__(self, "instructions", dict(self.instructions))
        if self.job_timeout_s is not None and not self.job_timeout_s > 0:
            raise ValueError(f"job_timeout_s must be > 0 seconds (or null for no limit), got {self.job_timeout_s}")

    def jobs(self) -> list[Job]:
        if self.mode == "chains":
            return chain_jobs(self.num_chains, self.seed)
        return single_task_jobs(self.tasks, self.episodes_per_task, self.seed)

    def run_key(self, env: EnvConfig, agent: AgentSource, pinned: AgentSource | None = None) -> dict[str, Any]:
        """What results depend on; a rerun in the same folder must match it (num_chains, workers and
        videos may change: more chains extend the run, fewer report a prefix). job_timeout_s is in it: a
        chain that runs past it twice is recorded as env_error instead of its outcome. `pinned`: the agent
        as pin_checkpoint gave it, when the caller has pinned it already (a link is then read once)."""
        agent_key = describe_agent_source(agent)
        for name in NOT_THE_AGENT:
            agent_key.get("kwargs", {}).pop(name, None)
        key = {"mode": self.mode, "ep_len": self.ep_len, "seed": self.seed, "job_timeout_s": self.job_timeout_s,
               "env": env.to_dict(), "agent": agent_key}
        if self.instructions:  # only when set: folders of CALVIN's instructions keep their run.json
            key["instructions"] = dict(sorted(self.instructions.items()))
        if self.mode == "single_task" and env.perturb.image_noise:
            # the scripted setup renders no frame since the setup without cameras (harness/eval/rollout.py), so
            # it no longer draws image noise and the agent's frames differ from a run made before: this entry,
            # absent from such a run's run.json, refuses to mix the two in one folder
            key["setup"] = "unrendered"
        if precision := _auto_precision(agent):
            key["precision"] = precision
        pinned = pinned if pinned is not None else pin_checkpoint(agent)
        link = _checkpoint_link(agent)
        if link:  # only for a link: folders of a checkpoint named directly keep their run.json
            key["checkpoint"] = _link_target(link, pinned.kwargs["checkpoint"])
        folder = _checkpoint_folder(pinned)
        if folder:  # what the agent loads, whatever the path: a step trained again with other settings is another
            key["weights"] = checkpoint_digest(folder)  # model, and a moved folder the same (harness/eval/store.py)
        return key


def _auto_precision(agent: AgentSource) -> str | None:
    """The dtype a VLA agent's `dtype: auto` resolves to where it runs (float32 on CPU, bf16 or fp16 on a GPU):
    the device is left out of the key, so without it a run resumed on another device mixed two precisions."""
    if not isinstance(agent, AgentConfig) or agent.factory or agent.name != "vla":
        return None
    if agent.kwargs.get("dtype", "auto") not in ("auto", None):  # named: the agent's key holds it
        return None
    import torch

    from agents.vla.agent import resolve_dtype

    return str(resolve_dtype("auto", torch.device(str(agent.kwargs.get("device", "cpu"))))).removeprefix("torch.")


def _checkpoint_folder(agent: AgentSource) -> str | None:
    """The agent's checkpoint when it is a checkpoint folder (one with model.safetensors: agents/vla/layout.py);
    a live agent's is the one its spec names (load_agent's: else two agents of one class key alike)."""
    if isinstance(agent, AgentConfig):
        path = agent.kwargs.get("checkpoint")
    else:
        path = agent.spec.checkpoint if is_live_agent(agent) else None
    return path if isinstance(path, str) and os.path.isfile(os.path.join(path, WEIGHTS)) else None


def _checkpoint_link(agent: AgentSource) -> str | None:
    """The agent's checkpoint when it is a link (a run's `checkpoints/last`)."""
    path = agent.kwargs.get("checkpoint") if isinstance(agent, AgentConfig) else None
    return path if isinstance(path, str) and os.path.islink(path) else None


def _link_target(link: str, pinned: str) -> str:
    """The link's target as written (e.g. step_0058000, relative: the run folder may move) when it still names the
    pinned folder; else the pinned folder relative to the link's (the link moved since it was pinned)."""
    target = os.readlink(link)
    same = os.path.normpath(os.path.join(os.path.dirname(link), target)) == os.path.normpath(pinned)
    return target if same else os.path.relpath(pinned, os.path.dirname(link))


def pin_checkpoint(agent: AgentSource, folder: str | None = None) -> AgentSource:
    """The agent with its checkpoint link (a run's `checkpoints/last`) replaced by the folder it names now: the
    same command after more training evaluates another model, so the run key names the folder (run_key) and
    every worker, rank and policy server loads that folder, even when training moves the link meanwhile.
    `folder`: the one the link named when the caller pinned it (a robustness suite's rows evaluate one model)."""
    link = _checkpoint_link(agent)
    if link is None:
        return agent
    assert isinstance(agent, AgentConfig)
    folder = folder if folder is not None else os.path.join(os.path.dirname(link), os.readlink(link))
    return replace(agent, kwargs={**agent.kwargs, "checkpoint": folder})


# quick checks from Python (and rollouts during training): in this process, quiet, no videos
IN_PROCESS = {"workers": 0, "progress": False, "videos": 0, "video_failures": 0}

# old spellings -> the settings that replaced them (command-line overrides and config files)
RENAMED = {"scene": "env.scene (the env owns the scene)",
           "agent.scene": "env.scene (the env owns the scene; the scripted expert reads it from the env)"}


@dataclass(frozen=True)
class EvalConfig:
    """What `python -m harness.eval` runs: configs/eval.yaml, resolved."""

    settings: EvalSettings
    env: EnvConfig
    agent: AgentConfig
    output_dir: str

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "EvalConfig":
        own, settings = split_settings(d, ("env", "agent", "output_dir"), "")
        for key in ("env", "agent", "output_dir"):
            if key not in own:
                raise ValueError(f"the evaluation config has no `{key}`")
        return cls(settings, EnvConfig.from_dict(own["env"]), agent_config(own["agent"]), str(own["output_dir"]))


def split_settings(d: Mapping[str, Any], own: Sequence[str], where: str) -> tuple[dict[str, Any], EvalSettings]:
    """A config that holds EvalSettings' fields beside its own keys `own` (the evaluation's top level, a
    rollout group): its own keys, and the rest as EvalSettings. An unknown key is an error naming it."""
    if not isinstance(d, Mapping):
        raise ValueError(f"{where or 'the evaluation config'}: expected a mapping of settings, got {type(d).__name__}")
    known = set(own) | {f.name for f in fields(EvalSettings)}
    for key in sorted(set(d) - known):
        full = f"{where}.{key}" if where else key
        raise ValueError(f"{full} is now {RENAMED[full]}" if full in RENAMED else
                         f"{where or 'eval'}: unknown key {key!r}; known keys are {sorted(known)}")
    mine = {k: v for k, v in d.items() if k in own}
    return mine, from_mapping(EvalSettings, {k: v for k, v in d.items() if k not in own}, where)


def agent_config(agent: Any) -> AgentConfig:
    """`agent:` of configs/eval.yaml: `name` (configs/agent/<name>.yaml) or `factory` ("module:callable"),
    and the agent's keyword arguments."""
    if not isinstance(agent, Mapping) or "name" not in agent:
        raise ValueError(f"agent: expected a mapping with a `name` (configs/agent/*.yaml), got {agent!r}")
    for key in agent:
        if f"agent.{key}" in RENAMED:
            raise ValueError(f"agent.{key} is now {RENAMED[f'agent.{key}']}")
    kwargs = {k: v for k, v in agent.items() if k not in ("name", "factory")}
    return AgentConfig(name=agent["name"], kwargs=kwargs, factory=agent.get("factory"))


def store_eval_defaults() -> None:
    """The defaults configs/eval.yaml and configs/env/*.yaml build on, from the dataclasses."""
    store_defaults("eval_settings", plain(EvalSettings()))
    store_defaults("base", plain(EnvConfig()), group="env")
