"""Picklable descriptions of the env and the agent, from which every worker process builds its own.

    EnvConfig(backend="builtin", scene="D").build(cameras=agent.spec.cameras)
    AgentConfig("random", {"seed": 0}).build()
    AgentConfig(factory="mypkg.policies:make_policy", kwargs={...}).build()   # your own agent

`factory` ("module:callable") lets tests and researchers plug in their own env or agent without a
registry entry; the callable gets the same keyword arguments.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Union

from agents import Agent, check_agent, import_object, make_agent
from harness.envs import BACKENDS, Env, make_env
from harness.envs.perturbations import Perturbations, perturbed
from harness.sim.layout import get_layout
from harness.strict_config import from_mapping


@dataclass(frozen=True)
class EnvConfig:
    """The env (hydra group `env`, configs/env/*.yaml; `rollout.env` in training). It owns the scene: agents
    that need the layout read it from the built env's description (`Agent.bind_env`)."""

    backend: str = "builtin"  # builtin | calvin
    scene: str = "D"  # A | B | C | D
    renderer: str = "tiny"  # tiny (CPU TinyRenderer) | egl; used when the agent asks for cameras, and for videos
    # further make_env keyword arguments, e.g. {camera_sizes: {static: 200}}; calvin: dataset_path, exact_reset
    # (configs/env/calvin.yaml). An option set to null is not passed: the backend's default holds.
    options: dict[str, Any] = field(default_factory=dict)
    factory: str | None = None  # "module:callable" that builds the env instead of make_env (custom backends, tests)
    # A new env for every chain. A reset restores the state a chain starts from, but not every cache of
    # PyBullet's solver: after a long history of chains on one env, a chain can end differently than on
    # a new env. A built-in env takes ~50 ms to build, so results that depend on the chain alone are cheap.
    fresh_per_chain: bool = True
    # env.perturb.<axis>=<level>: the robustness suite's axes, 0 = unperturbed (harness/envs/perturbations.py)
    perturb: Perturbations = field(default_factory=Perturbations)

    def __post_init__(self) -> None:
        """The names are checked here, without building anything (no pybullet import): a training run checks
        its rollout env at start-up, hours before the first rollout builds it."""
        object.__setattr__(self, "options", {k: v for k, v in self.options.items() if v is not None})
        if self.factory is None and self.backend not in BACKENDS:
            raise ValueError(f"env.backend: unknown env backend {self.backend!r}: expected one of {', '.join(BACKENDS)}")
        try:
            get_layout(self.scene)
        except ValueError as e:
            raise ValueError(f"env.scene: {e}") from None

    @classmethod
    def from_dict(cls, d: Any, where: str = "env") -> "EnvConfig":
        return from_mapping(cls, d, where)

    def build(self, cameras: tuple[str, ...] = ()) -> Env:
        kwargs = {"scene": self.scene, "renderer": self.renderer, "cameras": tuple(cameras), **self.options}
        env = import_object(self.factory)(**kwargs) if self.factory else make_env(self.backend, **kwargs)
        return perturbed(env, self.perturb)

    def build_for(self, agent: Agent) -> Env:
        """The env with only the cameras `agent` reads, and the agent bound to it: the env owns the scene, and
        an agent that needs its layout (the scripted expert) reads it from `bind_env(env.description)`."""
        env = self.build(cameras=tuple(agent.spec.cameras))
        if hasattr(agent, "bind_env"):
            agent.bind_env(env.description)
        return env

    def check(self) -> None:
        """Build the env once, rendering nothing, and close it: a bad backend, scene or option (or a
        missing package) fails here, with the setting named, instead of in every worker. renderer=egl is
        tried too (the env built here renders nothing)."""
        if self.renderer == "egl":
            from harness.sim.cameras import egl_problem  # pybullet: only when EGL is asked for

            if (problem := egl_problem()) is not None:
                raise ValueError(f"env.renderer=egl: {problem}")
        try:
            self.build().close()
        except Exception as e:  # noqa: BLE001 - whatever the backend raises, the user needs one line
            raise ValueError(f"env (backend={self.factory or self.backend}, scene={self.scene}): {_one_line(e)}") from e

    def to_dict(self) -> dict[str, Any]:
        d = {"backend": self.backend, "scene": self.scene, "renderer": self.renderer,
             "options": dict(self.options), "factory": self.factory, "fresh_per_chain": self.fresh_per_chain}
        if self.perturb.any():  # unperturbed: the key of every earlier run, so their folders still resume
            d["perturb"] = self.perturb.active()
        return d


@dataclass(frozen=True)
class AgentConfig:
    name: str = "scripted"
    kwargs: dict[str, Any] = field(default_factory=dict)
    factory: str | None = None  # "module:callable" used instead of make_agent(name, ...)

    def build(self) -> Agent:
        if self.factory:
            return import_object(self.factory)(**self.kwargs)
        return make_agent(self.name, **self.kwargs)

    def check(self) -> None:
        """What can be checked without building the agent in this process: the factory's import path,
        or `agents.check_agent` (a VLA checkpoint is read and checked, not loaded)."""
        try:
            import_object(self.factory) if self.factory else check_agent(self.name, **self.kwargs)
        except Exception as e:  # noqa: BLE001 - an import or a checkpoint can fail in many ways
            raise ValueError(f"agent ({self.factory or self.name}): {_one_line(e)}") from e

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kwargs": dict(self.kwargs), "factory": self.factory}


def _one_line(error: BaseException) -> str:
    """The error's message on one line; other errors than ValueErrors (written for users) keep their type."""
    text = " ".join(str(error).split())
    return text if isinstance(error, ValueError) else f"{type(error).__name__}: {text}"


def check_sources(env: EnvConfig, agent: AgentSource) -> None:
    """Check the env config and the agent before an evaluation touches its output folder or starts a
    worker. A factory function or a live agent is the caller's own object: only configs are checked."""
    env.check()
    if isinstance(agent, AgentConfig):
        agent.check()


# What an evaluation can be given as its agent: a config (any number of worker processes), a picklable
# zero-argument callable that returns an agent (likewise), or a live agent (in-process only: workers=0).
AgentSource = Union[AgentConfig, Callable[[], Agent], Agent]


def agent_device(agent: AgentSource) -> str | None:
    """The device an agent's model is configured to run on (`agent.device`); None for an agent object or
    factory, or a config that leaves it to the agent's default (CPU). The one reading of it: the torchrun
    backend and server=auto both decide from it."""
    return agent.kwargs.get("device") if isinstance(agent, AgentConfig) else None


def build_agent(source: AgentSource) -> Agent:
    if isinstance(source, AgentConfig):
        return source.build()
    if hasattr(source, "step") and hasattr(source, "spec"):
        return source  # a live agent
    if callable(source):
        return source()
    raise ValueError(f"expected an AgentConfig, an agent factory or an agent, got {type(source).__name__}")


def is_live_agent(source: AgentSource) -> bool:
    return not isinstance(source, AgentConfig) and hasattr(source, "step") and hasattr(source, "spec")


def describe_agent_source(source: AgentSource) -> dict[str, Any]:
    """What the resume check compares: the config, or the factory's qualified name."""
    if isinstance(source, AgentConfig):
        return source.to_dict()
    target = source if not is_live_agent(source) else type(source)
    return {"factory": f"{getattr(target, '__module__', '?')}:{getattr(target, '__qualname__', type(target).__name__)}"}
