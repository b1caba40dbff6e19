"""Environment backends behind calvin_env's API. `make_env("builtin" | "calvin", ...)`."""

from __future__ import annotations

from typing import Any

from harness.envs.base import CAMERA_NAMES, Env, EnvDescription

BACKENDS = ("builtin", "calvin")


def make_env(backend: str = "builtin", **kwargs: Any) -> Env:
    """Build an environment.

    make_env("builtin", scene="D")                       all cameras
    make_env("builtin", scene="D", cameras=())           renders nothing
    make_env("calvin", scene="D")                        the real calvin_env, config composed from its conf/
    make_env("calvin", dataset_path=PATH)                or from a CALVIN dataset's validation/.hydra config
    """
    if backend == "builtin":
        from harness.envs.builtin import BuiltinEnv

        return BuiltinEnv(**kwargs)
    if backend == "calvin":
        from harness.envs.calvin import CalvinEnv

        return CalvinEnv(**kwargs)
    raise ValueError(f"unknown env backend {backend!r}: expected one of {', '.join(BACKENDS)}")


__all__ = ["BACKENDS", "CAMERA_NAMES", "Env", "EnvDescription", "make_env"]
