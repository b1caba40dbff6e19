"""VLAPolicy and VLAAgent: a VLA checkpoint in the env loop.

`VLAPolicy` steps any number of sessions (episodes) together, the model run once for all of them (what a
policy server serves, harness/serve); `VLAAgent` is one session of one behind the `agents.base.Agent`
protocol (what an evaluation worker runs in-process).

Every step the model sees the new frame (so the history stays the one it was trained on, and with the
cache the backbone runs on that frame only), then an execution strategy picks the action:

* `replan`   - the first action of the newest chunk (re-plan every step; RoboVLMs' CALVIN setting);
* `chunk`    - execute `exec_horizon` actions of a chunk before switching to the newest chunk;
* `ensemble` - temporal ensembling (ACT): average every chunk's prediction for the current step, with
               weight exp(-ensemble_decay * i), i = 0 for the oldest chunk (a negative decay favours the
               newest). The gripper is averaged as a probability, then thresholded.

Normalised outputs become env actions with the checkpoint's own `ActionNormalizer`.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from agents.base import AgentSpec
from harness.data.normalization import ActionNormalizer
from harness.strict_config import from_mapping

from .inference import EpisodeState, new_episode, step_episodes
from .model import VLAModel

EXECUTIONS = ("replan", "chunk", "ensemble")
METRES_PER_UNIT = 0.02  # CALVIN relative action: position delta per unit of the 7-d action


@dataclass
class ExecutionConfig:
    """How the agent turns the model's chunks into one action per step (configs/agent/vla.yaml)."""

    execution: str = "replan"
    exec_horizon: int = 1  # chunk: actions executed per chunk (1 <= k <= the model's chunk_size)
    ensemble_decay: float = 0.1
    use_cache: bool = True  # False: re-run the whole window every step (the baseline)

    def __post_init__(self) -> None:
        if self.execution not in EXECUTIONS:
            raise ValueError(f"agent execution must be one of {EXECUTIONS}, got {self.execution!r}")
        if self.exec_horizon < 1:
            raise ValueError(f"exec_horizon must be >= 1, got {self.exec_horizon}")

    def check_chunk(self, chunk: int) -> None:
        if self.execution == "chunk" and self.exec_horizon > chunk:
            raise ValueError(f"exec_horizon {self.exec_horizon} exceeds the model's chunk_size={chunk}")


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """'auto': bf16 on GPUs that support it, else fp16 on GPUs, fp32 on CPU."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        if device.type == "cuda":  # native bf16 from Ampere on (torch's is_bf16_supported counts emulation too)
            return torch.bfloat16 if torch.cuda.get_device_capability(device)[0] >= 8 else torch.float16
        return torch.float32
    table = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
             "float16": torch.float16, "fp16": torch.float16}
    if dtype not in table:
        raise ValueError(f"unknown dtype {dtype!r}; use auto, float32, bfloat16 or float16")
    return table[dtype]


def _mixed_precision(model: torch.nn.Module) -> torch.dtype | None:
    """The low-precision dtype of a model whose weights are in two (a bf16 backbone beside fp32 heads, as a LoRA
    preset trains: the training's rollouts step it as it is), which runs only under autocast; None for one dtype."""
    floats = {p.dtype for p in model.parameters() if p.is_floating_point()}
    low = floats - {torch.float32}
    return next(iter(low)) if len(floats) > 1 and len(low) == 1 else None


@dataclass
class Session:
    """One episode of a `VLAPolicy`: the model's incremental state and the execution's (plan, past chunks)."""

    episode: EpisodeState
    instruction: str | None = None
    plan: torch.Tensor | None = None  # chunk being executed (normalised), and how far
    plan_step: int = 0
    chunks: deque = field(default_factory=deque)  # ensemble: the chunks that still cover the current step, newest last
    tcp: np.ndarray | None = None


class VLAPolicy:
    """A VLA model with its normaliser and execution settings, stepping any number of sessions (episodes)
    together: `step_batch` runs the model once for all of them (`inference.step_episodes`). A policy
    server serves one; `VLAAgent` is one session of one."""

    def __init__(self, model: VLAModel, normalizer: ActionNormalizer, cfg: ExecutionConfig | None = None,
                 checkpoint: str | None = None):
        self.model = model.eval()
        self.normalizer = normalizer
        self.cfg = cfg or ExecutionConfig()
        chunk = model.cfg.chunk_size
        self.cfg.check_chunk(chunk)
        self.device = next(model.parameters()).device
        self.autocast_dtype = _mixed_precision(model)
        self.spec = AgentSpec(
            name="vla", action_type="relative", cameras=model.cfg.cameras, privileged=False, checkpoint=checkpoint,
            extra={"backbone": model.cfg.backbone.pretrained or model.cfg.backbone.tiny, "head": model.cfg.head.type,
                   "history": model.cfg.history, "window_size": model.cfg.window_size, "chunk": chunk,
                   "execution": self.cfg.execution, "use_cache": self.cfg.use_cache},
        )

    def new_session(self) -> Session:
        return Session(new_episode(self.model), chunks=deque(maxlen=self.model.cfg.chunk_size))

    def reset(self, session: Session) -> None:
        """A new episode in the session (the start of a subtask)."""
        fresh = self.new_session()
        session.__dict__.update(fresh.__dict__)

    def close_session(self, session: Session) -> None:
        """Nothing to give back: a session's state is its own."""

    def step_batch(self, sessions: list[Session], observations: list[dict[str, Any]],
                   instructions: list[str]) -> list[np.ndarray]:
        """The next env action (7,) of every session, from its observation and instruction."""
        for session, instruction in zip(sessions, instructions):
            if instruction != session.instruction:
                if session.instruction is not None:  # features depend on the instruction: a new one starts afresh
                    self.reset(session)
                session.instruction = instruction
        frames = [self._frame(s, obs, i) for s, obs, i in zip(sessions, observations, instructions)]
        chunks = self.predict_chunks([s.episode for s in sessions], frames).cpu()
        normalised = torch.stack([self._execute(s, chunk) for s, chunk in zip(sessions, chunks)])
        return list(self.normalizer.denormalize(normalised.numpy()).astype(np.float64))

    def predict_chunks(self, episodes: list[EpisodeState], frames: list[dict[str, Any]]) -> torch.Tensor:
        """The model's normalised chunks (B, C, 7) at the sessions' new frames."""
        if self.autocast_dtype is None:
            return step_episodes(self.model, episodes, frames, cached=self.cfg.use_cache)
        with torch.autocast(self.device.type, dtype=self.autocast_dtype):
            return step_episodes(self.model, episodes, frames, cached=self.cfg.use_cache).float()

    def _frame(self, session: Session, obs: dict[str, Any], instruction: str) -> dict[str, Any]:
        rgb = obs.get("rgb_obs", obs)
        frame: dict[str, Any] = {"instruction": [instruction]}
        for camera in self.model.cfg.cameras:
            key = f"rgb_{camera}"
            if key not in rgb:
                raise ValueError(f"observation has no {key!r} (expected obs['rgb_obs'][{key!r}], uint8 (H, W, 3))")
            frame[key] = torch.as_tensor(np.ascontiguousarray(rgb[key]), dtype=torch.uint8, device=self.device)[None, None]
        if "robot_obs" in obs:
            robot_obs = np.asarray(obs["robot_obs"], dtype=np.float32)
            if robot_obs.shape != (15,):
                raise ValueError(f"robot_obs must have 15 values (CALVIN's proprioception), got shape {robot_obs.shape}")
            session.tcp = robot_obs[:3].astype(np.float64)
            frame["robot_obs"] = torch.as_tensor(robot_obs, device=self.device)[None, None]
        elif self.model.cfg.use_proprio:
            raise ValueError("model uses proprioception but the observation has no 'robot_obs'")
        return frame

    def _execute(self, session: Session, chunk: torch.Tensor) -> torch.Tensor:
        """Pick the normalised action (7,) for this step from the newest chunk (C, 7) and the past ones."""
        if self.cfg.execution == "replan":
            session.plan, session.plan_step = chunk, 0
        elif self.cfg.execution == "chunk":
            if session.plan is None or session.plan_step >= self.cfg.exec_horizon:
                session.plan, session.plan_step = chunk, 0
        else:
            session.chunks.append(chunk)
            n = len(session.chunks)
            # chunk j (0 = oldest) was predicted n-1-j steps ago: its entry for now is at index n-1-j
            preds = torch.stack([c[n - 1 - j] for j, c in enumerate(session.chunks)])
            w = torch.exp(-self.cfg.ensemble_decay * torch.arange(n, dtype=torch.float32))
            session.plan, session.plan_step = chunk, 0
            return (preds * (w / w.sum()).unsqueeze(-1)).sum(0)
        action = session.plan[session.plan_step]
        session.plan_step += 1
        return action

    def planned_tcp_path(self, session: Session) -> np.ndarray | None:
        """World-frame TCP positions (K, 3) of the rest of the session's plan, integrated from its TCP."""
        if session.plan is None or session.tcp is None:
            return None
        start = session.plan_step - 1 if self.cfg.execution == "chunk" else 0
        rel = self.normalizer.denormalize(session.plan[max(start, 0):].numpy())
        return session.tcp + np.cumsum(rel[:, :3] * METRES_PER_UNIT, axis=0)


class VLAAgent:
    """One session of a `VLAPolicy` behind the agent protocol (`agents.base.Agent`)."""

    def __init__(self, model: VLAModel, normalizer: ActionNormalizer, cfg: ExecutionConfig | None = None,
                 checkpoint: str | None = None):
        self.policy = VLAPolicy(model, normalizer, cfg, checkpoint)
        self.model, self.spec = self.policy.model, self.policy.spec
        self.session = self.policy.new_session()

    def reset(self) -> None:
        self.policy.reset(self.session)

    def step(self, obs: dict[str, Any], instruction: str) -> np.ndarray:
        return self.policy.step_batch([self.session], [obs], [instruction])[0]

    def planned_tcp_path(self) -> np.ndarray | None:
        return self.policy.planned_tcp_path(self.session)


def _options(device: str, dtype: str | torch.dtype | None, agent_cfg: dict[str, Any]) -> tuple[torch.device, torch.dtype, ExecutionConfig]:
    execution = from_mapping(ExecutionConfig, agent_cfg, "agent")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"device={device!r} is not a device ({e})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r}, but this machine has no CUDA device")
    return dev, resolve_dtype(dtype, dev), execution


def check_agent_options(checkpoint: str | Path, device: str = "cpu", dtype: str | torch.dtype | None = "auto",
                        **agent_cfg: Any) -> None:
    """Everything `load_agent` checks before it builds the model: the options, and the checkpoint folder
    read and checked (`inspect_checkpoint`), without building the model."""
    from .checkpoint import inspect_checkpoint

    _, _, cfg = _options(device, dtype, agent_cfg)
    cfg.check_chunk(inspect_checkpoint(checkpoint).cfg.chunk_size)


def load_policy(checkpoint: str | Path, device: str = "cpu", dtype: str | torch.dtype | None = "auto",
                **agent_cfg: Any) -> VLAPolicy:
    """Load a checkpoint folder into a ready policy (any number of sessions). `agent_cfg`: ExecutionConfig
    fields (execution, ...); the keys of configs/agent/vla.yaml other than `name` map onto these arguments."""
    from .checkpoint import load_checkpoint

    dev, dt, cfg = _options(device, dtype, agent_cfg)
    ckpt = load_checkpoint(checkpoint, device=dev, dtype=dt)
    return VLAPolicy(ckpt.model, ckpt.normalizer, cfg, checkpoint=str(checkpoint))


def load_agent(checkpoint: str | Path, device: str = "cpu", dtype: str | torch.dtype | None = "auto",
               **agent_cfg: Any) -> VLAAgent:
    """Load a checkpoint folder into a ready agent (one session of `load_policy`'s policy)."""
    policy = load_policy(checkpoint, device, dtype, **agent_cfg)
    return VLAAgent(policy.model, policy.normalizer, policy.cfg, checkpoint=policy.spec.checkpoint)
