"""Agents: everything that maps (observation, instruction) to a 7-d CALVIN action.

    from agents import Agent, AgentSpec, make_agent
    agent = make_agent("scripted", scene="D")          # the scripted expert (privileged, no cameras)
    agent = make_agent("random", seed=0)                # uniform relative actions, random gripper
    agent = make_agent("replay", actions="run.npz")     # plays back recorded actions
    agent = make_agent("vla", checkpoint=DIR, device="cuda")

Every agent but the random and replay ones is imported only when it is made, so that `import agents`
stays free of torch and transformers.
"""

from __future__ import annotations

from typing import Any, Callable

from agents.base import ActionType, Agent, AgentSpec


def _random(**kwargs: Any) -> Agent:
    from agents.random_agent import RandomAgent

    return RandomAgent(**kwargs)


def _replay(**kwargs: Any) -> Agent:
    from agents.replay import ReplayAgent

    return ReplayAgent(**kwargs)


def _scripted(**kwargs: Any) -> Agent:
    try:
        from agents.scripted import ScriptedExpert
    except ImportError as e:
        raise ImportError(f"the scripted expert (agents.scripted.ScriptedExpert) is not available: {e}") from e
    return ScriptedExpert(**kwargs)


def _required_checkpoint(checkpoint: str | None) -> str:
    if checkpoint is None:
        raise ValueError("make_agent('vla'): a checkpoint folder is needed (checkpoint=PATH)")
    return checkpoint


def _vla(checkpoint: str | None = None, **kwargs: Any) -> Agent:
    return load_agent(_required_checkpoint(checkpoint), **kwargs)


AGENTS: dict[str, Callable[..., Agent]] = {"random": _random, "replay": _replay, "scripted": _scripted, "vla": _vla}


def make_agent(name: str, **kwargs: Any) -> Agent:
    """Build the agent registered under `name` with its keyword arguments."""
    try:
        factory = AGENTS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown agent {name!r}: expected one of {', '.join(sorted(AGENTS))}") from None
    return factory(**kwargs)


def check_agent(name: str, **kwargs: Any) -> None:
    """Raise now what `make_agent(name, **kwargs)` would raise later (in a worker process). A VLA agent's
    options and checkpoint folder are checked without building its model; the other agents are cheap, so
    they are built and dropped."""
    if name != "vla":
        make_agent(name, **kwargs)
        return
    from agents.vla.agent import check_agent_options

    check_agent_options(_required_checkpoint(kwargs.pop("checkpoint", None)), **kwargs)


def load_agent(checkpoint_dir: Any, device: str = "cpu", **kwargs: Any) -> Agent:
    """Load a VLA checkpoint folder into a ready agent (agents.vla.load_agent; see there for kwargs)."""
    from agents.vla import load_agent as _load

    return _load(checkpoint_dir, device=device, **kwargs)


__all__ = ["AGENTS", "ActionType", "Agent", "AgentSpec", "check_agent", "load_agent", "make_agent"]
