"""`env=calvin`: the real calvin_env behind the same API as the built-in scene.

calvin_env is not on PyPI. Install it from a git clone (its constructor reads its own git commit hash,
so a `git archive` extraction fails):

    git clone --recurse-submodules https://github.com/mees/calvin_env.git
    pip install -e calvin_env

The environment is built the way CALVIN's evaluation builds it (shared/calvin.md §2), from either
  * calvin_env's own `conf/`: robot `panda_longer_finger`, scene `calvin_scene_{A..D}`, cameras
    `static_and_gripper` (so tacto is never imported), env `play_table_env` with the chosen renderer; or
  * a CALVIN dataset's `validation/.hydra/merged_config.yaml`, as CALVIN's `evaluate_policy` does.
In both cases only the cameras that were asked for are kept: the tactile camera of the dataset config
(it needs tacto and changes nothing the physics or the oracle sees) is dropped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from harness.envs.actions import AbsoluteAction, parse_action
from harness.envs.base import CAMERA_NAMES, ROBOT_OBS_DIM, SCENE_OBS_DIM, EnvDescription
from harness.sim.layout import get_layout

INSTALL_HINT = (
    "env=calvin needs the real calvin_env, which is not on PyPI. Install it from a git clone:\n"
    "    git clone --recurse-submodules https://github.com/mees/calvin_env.git\n"
    "    pip install -e calvin_env\n"
    "(a `git archive` or zip extraction does not work: calvin_env reads its own git commit hash)."
)


def _import_calvin_env():
    try:
        import calvin_env  # noqa: F401
    except ImportError as e:
        raise ImportError(INSTALL_HINT) from e
    return calvin_env


def calvin_conf_dir(calvin_env_module) -> Path:
    """calvin_env's hydra config folder: `conf/` next to the package in the git clone."""
    candidates = [Path(calvin_env_module.__file__).resolve().parent.parent / "conf", Path(calvin_env_module.__file__).resolve().parent / "conf"]
    for path in candidates:
        if path.is_dir():
            return path
    raise FileNotFoundError(f"calvin_env's conf/ folder not found (looked in {', '.join(map(str, candidates))}). {INSTALL_HINT}")


def compose_env_config(scene: str, renderer: str, config_name: str = "config_data_collection"):
    """calvin_env's env config composed from its own conf/ (hydra compose API)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    conf = calvin_conf_dir(_import_calvin_env())
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(conf), version_base=None):
        cfg = compose(
            config_name=config_name,
            overrides=[
                "cameras=static_and_gripper",
                "robot=panda_longer_finger",
                f"scene=calvin_scene_{scene}",
                "env=play_table_env",
                f"env.use_egl={'true' if renderer == 'egl' else 'false'}",
                "env.show_gui=false",
            ],
        )
    GlobalHydra.instance().clear()
    return cfg


def dataset_env_config(dataset_path: str | Path):
    """The env config of a CALVIN dataset's recording (validation/.hydra/merged_config.yaml)."""
    from omegaconf import OmegaConf

    path = Path(dataset_path)
    candidates = [path / "validation" / ".hydra" / "merged_config.yaml", path / ".hydra" / "merged_config.yaml"]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise FileNotFoundError(f"no merged_config.yaml under {path}: expected {candidates[0]}")
    cfg = OmegaConf.load(found)
    if "env" not in cfg:
        raise ValueError(f"{found}: expected an 'env' section (calvin_env's PlayTableSimEnv config)")
    return cfg


class CalvinEnv:
    """A calvin_env PlayTableSimEnv with the project's input validation and description."""

    def __init__(
        self,
        scene: str = "D",
        dataset_path: str | Path | None = None,
        cameras: tuple[str, ...] | list[str] = CAMERA_NAMES,
        camera_sizes: dict[str, int] | None = None,
        renderer: str = "tiny",
        seed: int = 0,
        config_name: str = "config_data_collection",
    ) -> None:
        layout = get_layout(scene)
        if renderer not in ("tiny", "egl"):
            raise ValueError(f"renderer must be 'tiny' or 'egl', got {renderer!r}")
        unknown = [c for c in cameras if c not in CAMERA_NAMES]
        if unknown:
            raise ValueError(f"unknown camera(s) {unknown}: expected a subset of {list(CAMERA_NAMES)}")
        _import_calvin_env()
        import hydra

        if dataset_path is not None:
            cfg = dataset_env_config(dataset_path)
        else:
            cfg = compose_env_config(layout.name, renderer, config_name)
        self._configure_cameras(cfg, tuple(cameras), camera_sizes or {})
        try:
            self._env = hydra.utils.instantiate(cfg.env, show_gui=False, use_vr=False, use_scene_info=True, seed=seed)
        except Exception as e:
            if type(e).__name__ == "InvalidGitRepositoryError" or "InvalidGitRepository" in repr(e):
                raise RuntimeError(f"calvin_env is not installed from a git clone. {INSTALL_HINT}") from e
            raise
        self.cameras = tuple(cameras)
        use_egl = bool(cfg.env.get("use_egl", False))
        self.description = EnvDescription(
            backend="calvin",
            scene=layout.name if dataset_path is None else get_layout(str(cfg.get("scene", {}).get("name", layout.name))).name,
            renderer=("egl" if use_egl else "tiny") if cameras else "none",
            cameras=self.cameras,
            camera_sizes={c: int(camera_sizes.get(c, 0)) for c in cameras} if camera_sizes else {},
            version=f"calvin_env from {cfg.env.get('_target_', '?')}",
        )

    @staticmethod
    def _configure_cameras(cfg, cameras: tuple[str, ...], sizes: dict[str, int]) -> None:
        """Keep only the asked-for cameras (nothing renders that nobody asked for) and apply sizes."""
        from omegaconf import open_dict

        section = cfg.env.cameras if "cameras" in cfg.env else cfg.cameras
        with open_dict(section):
            for name in list(section.keys()):
                if name not in cameras:
                    del section[name]
            for name, size in sizes.items():
                if name in section:
                    section[name].width = int(size)
                    section[name].height = int(size)

    # ------------------------------------------------------------------ calvin_env's API

    def reset(self, robot_obs: np.ndarray | None = None, scene_obs: np.ndarray | None = None) -> dict[str, Any]:
        for values, size, name in ((robot_obs, ROBOT_OBS_DIM, "robot_obs"), (scene_obs, SCENE_OBS_DIM, "scene_obs")):
            if values is not None and np.asarray(values).shape != (size,):
                raise ValueError(f"{name} must have shape ({size},), got {np.asarray(values).shape}")
        return self._env.reset(robot_obs=robot_obs, scene_obs=scene_obs)

    def step(self, action: Any) -> tuple[dict[str, Any], float, bool, dict[str, Any]]:
        parsed = parse_action(action)  # ValueError on bad input, before calvin_env's assertions
        if isinstance(parsed, AbsoluteAction):
            native: Any = (parsed.pos.copy(), parsed.orn.copy(), parsed.gripper)
        else:
            native = parsed.values.copy()  # calvin_env 1431a46 scales the array in place
        return self._env.step(native)

    def get_obs(self) -> dict[str, Any]:
        return self._env.get_obs()

    def get_info(self) -> dict[str, Any]:
        return self._env.get_info()

    def close(self) -> None:
        env = getattr(self, "_env", None)
        if env is None:
            return
        env.close()
        # calvin_env's __del__ calls close() again; PyBullet reuses client ids from 0, so a second
        # disconnect would close the NEXT env's client. Disown the id (shared/calvin.md §1).
        if hasattr(env, "ownsPhysicsClient"):
            env.ownsPhysicsClient = False
        self._env = None

    def __enter__(self) -> "CalvinEnv":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
