"""The evaluation's config, the same dataclasses for both callers: the command line (configs/eval.yaml) and the
rollouts during training (harness/train/config.py's RolloutConfig, configs/rollout/).

    configs/eval.yaml, top level   -> EvalSettings (harness/eval/evaluation.py; its defaults are the command's)
    configs/eval.yaml, env.*       -> EnvConfig (harness/eval/specs.py; configs/env/*.yaml)
    configs/eval.yaml, agent.*     -> AgentConfig: `name` (or `factory`) + the agent's keyword arguments

Parsing is strict (harness/strict_config.py): an unknown key or a mistyped value is an error naming it.
`python -m harness.eval --cfg job` prints every setting with its value.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping, Sequence

from harness.eval.evaluation import EvalSettings
from harness.eval.specs import AgentConfig, EnvConfig
from harness.hydra_app import store_defaults
from harness.strict_config import from_mapping, plain

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
