"""Agents: everything that maps (observation, instruction) to a 7-d CALVIN action.

    from agents import Agent, AgentSpec, make_agent
    agent = make_agent("scripted")                      # the scripted expert (privileged, no cameras);
    agent.bind_env(env.description)                     # it plans in the scene of the env it is bound to
    agent = make_agent("random", seed=0)                # uniform relative actions, random gripper
    agent = make_agent("replay", actions="run.npz")     # plays back recorded actions
    agent = make_agent("vla", checkpoint=DIR, device="cuda")
    agent = make_agent("remote", url="ws://127.0.0.1:8000", protocol="vla_eval")   # a policy server's agent
    policy = make_policy("vla", checkpoint=DIR)         # what a policy server serves: sessions stepped together

Every agent but the random and replay ones is imported only when it is made, so that `import agents`
stays free of torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from agents.base import ActionType, Agent, AgentSessions, AgentSpec, AgentUnavailable, SessionPolicy
from harness.envs.base import EnvDescription


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


def _remote(**kwargs: Any) -> Agent:
    from agents.remote import RemoteAgent

    return RemoteAgent(**kwargs)


def _required_checkpoint(checkpoint: str | None) -> str:
    if checkpoint is None:
        raise ValueError("make_agent('vla'): a checkpoint folder is needed (checkpoint=PATH)")
    return checkpoint


def _vla(checkpoint: str | None = None, **kwargs: Any) -> Agent:
    return load_agent(_required_checkpoint(checkpoint), **kwargs)


AGENTS: dict[str, Callable[..., Agent]] = {"random": _random, "replay": _replay, "scripted": _scripted, "vla": _vla,
                                           "remote": _remote}


def import_object(path: str) -> Any:
    """"package.module:attribute" -> the attribute (a factory named by its import path)."""
    module, sep, attr = str(path).partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"expected an import path 'package.module:attribute', got {path!r}")
    obj = importlib.import_module(module)
    for part in attr.split("."):
        obj = getattr(obj, part)
    return obj


def make_agent(name: str, **kwargs: Any) -> Agent:
    """Build the agent registered under `name` with its keyword arguments."""
    try:
        factory = AGENTS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown agent {name!r}: expected one of {', '.join(sorted(AGENTS))}") from None
    return factory(**kwargs)


def check_agent(name: str, **kwargs: Any) -> None:
    """Raise now what `make_agent(name, **kwargs)` would raise later (in a worker process). A VLA agent's
    options and checkpoint folder are checked without building its model; a remote agent connects once,
    without waiting for a server that is down; the other agents are cheap, so they are built and dropped."""
    if name == "remote":
        make_agent(name, **{**kwargs, "reconnect_timeout_s": 0}).close()
        return
    if name != "vla":
        make_agent(name, **kwargs)
        return
    from agents.vla.agent import check_agent_options

    check_agent_options(_required_checkpoint(kwargs.pop("checkpoint", None)), **kwargs)


def make_policy(name: str, factory: str | None = None, scene: str | None = None,
                block_sizes: dict[str, str] | None = None, **kwargs: Any) -> SessionPolicy:
    """What a policy server serves. A VLA checkpoint becomes a `VLAPolicy` (sessions stepped together, the
    model run once per batch); a factory ("module:callable") that returns a `SessionPolicy` is used as it
    is; any other agent (a registered name, or a factory's agent) runs one agent per session.

    `scene`: the scene of the env the clients run in. A server has no env of its own, so an agent that
    reads the layout (the scripted expert) is bound to this scene as an env would bind it (`bind_env`), with the
    blocks' sizes by colour where the clients' env has recoloured them (`block_sizes`, the block colour axis)."""
    if block_sizes and scene is None:
        raise ValueError("make_policy: block_sizes are the sizes of the scene's blocks; give the scene too")
    if factory is None and name == "vla":
        from agents.vla import load_policy

        return load_policy(_required_checkpoint(kwargs.pop("checkpoint", None)), **kwargs)

    def build() -> Any:
        agent = import_object(factory)(**kwargs) if factory else make_agent(name, **kwargs)
        if scene is not None and hasattr(agent, "bind_env"):
            agent.bind_env(EnvDescription(backend="served", scene=scene, renderer="none", block_sizes=dict(block_sizes or {})))
        return agent

    first = build()
    return first if isinstance(first, SessionPolicy) else AgentSessions(build, first)


def load_agent(checkpoint_dir: Any, device: str = "cpu", **kwargs: Any) -> Agent:
    """Load a VLA checkpoint folder into a ready agent (agents.vla.load_agent; see there for kwargs)."""
    from agents.vla import load_agent as _load

    return _load(checkpoint_dir, device=device, **kwargs)


__all__ = ["AGENTS", "ActionType", "Agent", "AgentSessions", "AgentSpec", "AgentUnavailable", "SessionPolicy",
           "check_agent", "import_object", "load_agent", "make_agent", "make_policy"]
