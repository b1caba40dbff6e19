"""The hydra config (configs/eval.yaml and its env/agent groups) -> the evaluation's settings."""

from __future__ import annotations

from typing import Any, Mapping

from harness.eval.evaluation import EvalSettings
from harness.eval.served import server_options
from harness.eval.specs import AgentConfig, EnvConfig

DEFAULT_VIDEO_FAILURES = 10  # video_failures=true
_ENV_KEYS = {"backend", "renderer", "options", "factory", "fresh_per_chain"}
_AGENT_KEYS = {"name", "factory"}


def _count(value: Any, name: str, default_true: int) -> int:
    if isinstance(value, bool):
        return default_true if value else 0
    if value is None:
        return 0
    if not isinstance(value, int) or value < 0:
        raise ValueError(f"{name} must be true/false or a count >= 0, got {value!r}")
    return value


def env_config(env: Mapping[str, Any], scene: str) -> EnvConfig:
    options = dict(env.get("options") or {})
    for key, value in env.items():  # backend-specific keys (dataset_path) go to make_env when set
        if key not in _ENV_KEYS and value is not None:
            options[key] = value
    return EnvConfig(backend=env["backend"], scene=scene, renderer=env.get("renderer", "tiny"), options=options,
                     factory=env.get("factory"), fresh_per_chain=bool(env.get("fresh_per_chain", True)))


def agent_config(agent: Mapping[str, Any]) -> AgentConfig:
    kwargs = {k: v for k, v in agent.items() if k not in _AGENT_KEYS}
    return AgentConfig(name=agent["name"], kwargs=kwargs, factory=agent.get("factory"))


def _number(cfg: Mapping[str, Any], key: str, kind: type, default: Any = None, optional: bool = False) -> Any:
    """cfg[key] as an int or float (None stays None where `optional`); anything else is an error naming it."""
    value = cfg.get(key, default)
    if value is None and optional:
        return None
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ValueError(f"{key} must be {'an integer' if kind is int else 'a number'}, got {value!r}") from None


def settings(cfg: Mapping[str, Any]) -> EvalSettings:
    tasks = cfg.get("tasks")
    return EvalSettings(
        mode=cfg["mode"], num_chains=_number(cfg, "num_chains", int), tasks=tuple(tasks) if tasks is not None else None,
        episodes_per_task=_number(cfg, "episodes_per_task", int), ep_len=_number(cfg, "ep_len", int),
        workers=_number(cfg, "workers", int), seed=_number(cfg, "seed", int), videos=_count(cfg.get("videos", 0), "videos", 1),
        video_failures=_count(cfg.get("video_failures", 0), "video_failures", DEFAULT_VIDEO_FAILURES),
        video_format=cfg.get("video_format", "mp4"), video_fps=_number(cfg, "video_fps", int, 30),
        video_stride=_number(cfg, "video_stride", int, 1), progress=bool(cfg.get("progress", True)),
        overwrite=bool(cfg.get("overwrite", False)), dist_backend=cfg.get("dist_backend", "auto"),
        dist_timeout_s=_number(cfg, "dist_timeout_s", float, 48 * 3600),
        job_timeout_s=_number(cfg, "job_timeout_s", float, optional=True),
        server=cfg.get("server", "auto"), server_options=server_options(cfg.get("server_options")),
    )


def from_config(cfg: Mapping[str, Any]) -> tuple[EvalSettings, EnvConfig, AgentConfig]:
    """A resolved config (plain dict) -> (settings, env, agent)."""
    return settings(cfg), env_config(cfg["env"], cfg["scene"]), agent_config(cfg["agent"])
