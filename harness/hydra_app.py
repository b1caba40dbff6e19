"""What the hydra command lines (`python -m harness.eval`, `python -m harness.train`) share: where the yaml
configs are, the dataclass defaults the yaml files build on, and settings renamed since an earlier layout.

    @hydra_app("eval")                         # configs/eval.yaml, wherever the package is installed
    def evaluate(cfg): ...

    store_defaults("eval_settings", plain(EvalSettings()))        # `- eval_settings` in eval.yaml's defaults
    store_defaults("base", plain(EnvConfig()), group="env")       # `- base` in configs/env/*.yaml
    reject_renamed(sys.argv[1:], {"scene": "env.scene"})          # a one-line error for an old spelling
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from harness.config_errors import ConfigError


def config_dir() -> str:
    """The folder of the yaml configs. It is the repository's `configs/`, which pyproject.toml installs as the
    package `harness.configs`: inside the wheel, or mapped onto the repository's folder by an editable
    install. A checkout used without installing it finds the folder next to `harness/`."""
    try:
        return str(files("harness.configs"))
    except ModuleNotFoundError:
        return str(Path(__file__).resolve().parents[1] / "configs")


def hydra_app(config_name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """`hydra.main` on `config_dir()`'s `<config_name>.yaml`."""
    import hydra

    return hydra.main(config_path=config_dir(), config_name=config_name, version_base=None)


def store_defaults(name: str, node: Mapping[str, Any], group: str | None = None) -> None:
    """Register `node` (a dataclass's defaults, `harness.strict_config.plain`) in hydra's ConfigStore, where
    the defaults lists of the yaml files find it by `name` (in `group`)."""
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name=name, node=dict(node), group=group)


def reject_renamed(overrides: Sequence[str], renamed: Mapping[str, str]) -> None:
    """A ConfigError for a command-line override that uses a renamed setting or group.

    `renamed` maps an old key to its replacement; a key ending in "." renames every key under it
    ({"eval.": "rollout."}: eval.every=10 -> rollout.every=10)."""
    for override in overrides:
        if override.startswith("-") or "=" not in override:
            continue
        key = override.split("=", 1)[0].lstrip("+~")
        new = renamed.get(key)
        if new is None:
            prefix = next((old for old in renamed if old.endswith(".") and key.startswith(old)), None)
            new = renamed[prefix] + key[len(prefix):] if prefix is not None else None
        if new is not None:
            raise ConfigError(f"{key} is now {new} (in: {override})")
