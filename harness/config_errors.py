"""Invalid configurations, found before any work and reported in one line by the command lines.

    with config_errors():                       # ValueErrors raised inside become ConfigErrors
        settings = Settings.from_dict(cfg)
    with exit_on_config_error("harness.eval"):  # __main__: "harness.eval: invalid configuration: ...", exit 2
        cfg = resolve_config(hydra_cfg)          # a missing (???) or unresolvable value is a ConfigError too
        main_work(cfg)
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Any, Iterator

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """An invalid configuration (a setting, or what a setting points at), found before any work."""


@contextmanager
def config_errors() -> Iterator[None]:
    """ValueErrors raised inside (config checks, opening data or checkpoints) become ConfigErrors."""
    try:
        yield
    except ConfigError:
        raise
    except ValueError as err:
        raise ConfigError(str(err)) from err


@contextmanager
def exit_on_config_error(prog: str) -> Iterator[None]:
    """A ConfigError raised inside is printed as one line on stderr and ends the process with status 2."""
    try:
        yield
    except ConfigError as err:
        print(f"{prog}: invalid configuration: {err}", file=sys.stderr, flush=True)
        sys.exit(2)


def resolve_config(cfg: Any) -> dict[str, Any]:
    """The hydra config as plain containers, every interpolation resolved; a missing mandatory value
    (`???`) or an interpolation that does not resolve is a ConfigError naming the key."""
    try:
        return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    except OmegaConfBaseException as err:
        key = getattr(err, "full_key", None)
        raise ConfigError(f"{key}: {str(err).splitlines()[0]}" if key else str(err).splitlines()[0]) from err
