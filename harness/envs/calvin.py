"""`env=calvin`: the real calvin_env behind the same API as the built-in scene.

calvin_env is not on PyPI. `scripts/install_calvin_env.sh [SOURCE]` installs it into the project's venv
from a git clone (GitHub by default, or a local clone or git bundle): its constructor reads its own git
commit hash, so a `git archive` extraction fails. Only what its simulation imports is installed (no
tacto, no hydra-colorlog): see docs/EVALUATION.md, "The real calvin_env".

The environment is built the way CALVIN's evaluation builds it (docs/EVALUATION.md), from either
  * calvin_env's own `conf/`: robot `panda_longer_finger`, scene `calvin_scene_{A..D}`, cameras
    `static_and_gripper` (so tacto is never imported), env `play_table_env` with the chosen renderer; or
  * a CALVIN dataset's `validation/.hydra/merged_config.yaml`, as CALVIN's `evaluate_policy` does.
In both cases only the cameras that were asked for are kept: the tactile camera of the dataset config
(it needs tacto and changes nothing the physics or the oracle sees) is dropped.

reset(robot_obs, scene_obs) is calvin_env's own by default: it keeps the last gripper action (so
robot_obs[14] of the first observation is the previous episode's), as in CALVIN's evaluation, whose
published numbers were measured that way. `exact_reset=True` sets it from robot_obs[14], so that the
observation after a reset is the state asked for. PyBullet's contact caches carry over either way: only
a new env behaves exactly as a new env (docs/EVALUATION.md, "The real calvin_env").
"""

from __future__ import annotations

import re
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from harness.envs.actions import AbsoluteAction, parse_action
from harness.envs.base import CAMERA_NAMES, ROBOT_OBS_DIM, SCENE_OBS_DIM, EnvDescription, state_vector
from harness.sim.layout import get_layout
from harness.sim.distractors import DistractorKind
from harness.sim.scene import FURNITURE_FORCE, DistractorBodies

INSTALL_HINT = (
    "env=calvin needs the real calvin_env, which is not on PyPI. Install it from a git clone:\n"
    "    scripts/install_calvin_env.sh                 # from https://github.com/mees/calvin_env, commit 797142c\n"
    "    scripts/install_calvin_env.sh PATH.bundle     # or from a local clone or git bundle (--commit 1431a46: CALVIN's pin)\n"
    "(a `git archive` or zip extraction does not work: calvin_env reads its own git commit hash)."
)


def _import_calvin_env():
    try:
        import calvin_env  # noqa: F401
    except ImportError as e:
        raise ImportError(INSTALL_HINT) from e
    return calvin_env


def _commit_of(calvin_env_module) -> str:
    """The calvin_env commit in use (797142c and CALVIN's pinned 1431a46 differ: docs/EVALUATION.md)."""
    try:
        import git

        repo = git.Repo(Path(calvin_env_module.__file__).resolve().parent, search_parent_directories=True)
        return repo.head.object.hexsha[:7]
    except Exception:  # noqa: BLE001 - not a clone: the constructor has already said so
        return "unknown commit"


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
    with initialize_config_dir(config_dir=str(conf), version_base=None), warnings.catch_warnings():
        # calvin_env's config predates hydra 1.1's `_self_` rule; its composition order is what CALVIN used.
        warnings.filterwarnings("ignore", message=".*Defaults list is missing `_self_`")
        cfg = compose(
            config_name=config_name,
            overrides=[
                # calvin_env's defaults name the hydra-colorlog plugin for its own logging; the env does
                # not need it, so it is neither installed nor required (docs/EVALUATION.md).
                "hydra/job_logging=default",
                "hydra/hydra_logging=default",
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


def dataset_scene(cfg: Any) -> str | None:
    """The scene a dataset's env config loads: calvin_env's scene configs have no name, but each loads its own
    table (`calvin_table_D/urdf/calvin_table_D.urdf`); a config with a `scene.name` names it."""
    from omegaconf import OmegaConf

    table = OmegaConf.select(cfg, "env.scene_cfg.objects.fixed_objects.table.file", default=None) or \
        OmegaConf.select(cfg, "scene.objects.fixed_objects.table.file", default=None)
    found = re.search(r"calvin_table_([A-D])\b", str(table)) if table else None
    if found:
        return found.group(1)
    name = OmegaConf.select(cfg, "scene.name", default=None)
    return get_layout(str(name)).name if name else None


def _check_dataset_scene(cfg: Any, scene: str, dataset_path: str | Path) -> None:
    """The dataset's config decides what is loaded; env.scene decides the description and the layout the
    start states and the expert bind to: the two must agree (a D dataset with env.scene=A swapped the red and
    pink blocks without an error)."""
    loaded = dataset_scene(cfg)
    if loaded is None:
        raise ValueError(f"{dataset_path}: its merged_config.yaml does not say which scene it loads (no "
                         "scene.objects.fixed_objects.table.file); build the env from env.scene without dataset_path")
    if loaded != scene:
        raise ValueError(f"{dataset_path} loads scene {loaded} (its merged_config.yaml's table), but env.scene is "
                         f"{scene}: set env.scene={loaded}")


def _set_renderer(cfg: Any, renderer: str) -> None:
    """env.renderer owns the renderer also with a dataset's config (CALVIN's recordings say use_egl: true):
    TinyRenderer unless renderer=egl (docs/EVALUATION.md)."""
    from omegaconf import open_dict

    with open_dict(cfg.env):
        cfg.env.use_egl = renderer == "egl"


def _require_first_client() -> None:
    """calvin_env makes some PyBullet calls without its client id, so they reach client 0 whatever its own
    client is: its robot's base and fixed constraint (`robot.py`), the EGL renderer plugin, the IK of
    `mixed_ik.py`. Built while another PyBullet client holds id 0, it moves and renders differently (measured:
    another TCP after three steps, other camera images; the EGL env drew with TinyRenderer and the other env
    drew an empty scene), silently. So it must be the process's first PyBullet client (docs/FIDELITY.md#one-calvin_env-per-process-built-first)."""
    import pybullet as pb

    if pb.isConnected(physicsClientId=0):
        raise RuntimeError(
            "calvin_env must be the first PyBullet client of its process, and PyBullet client 0 is already "
            "connected here (another env built in this process and not closed): calvin_env sends some calls to "
            "client 0 whatever its own client is, so it would move and render differently. Build it in a process "
            "of its own, before any other env, or close the other env first (docs/FIDELITY.md#one-calvin_env-per-process-built-first)"
        )


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
        exact_reset: bool = False,
    ) -> None:
        layout = get_layout(scene)
        if renderer not in ("tiny", "egl"):
            raise ValueError(f"renderer must be 'tiny' or 'egl', got {renderer!r}")
        unknown = [c for c in cameras if c not in CAMERA_NAMES]
        if unknown:
            raise ValueError(f"unknown camera(s) {unknown}: expected a subset of {list(CAMERA_NAMES)}")
        calvin_env_module = _import_calvin_env()
        import hydra

        if dataset_path is not None:
            cfg = dataset_env_config(dataset_path)
            _check_dataset_scene(cfg, layout.name, dataset_path)
            _set_renderer(cfg, renderer)
        else:
            cfg = compose_env_config(layout.name, renderer, config_name)
        self._configure_cameras(cfg, tuple(cameras), camera_sizes or {})
        _require_first_client()
        try:
            self._env = hydra.utils.instantiate(cfg.env, show_gui=False, use_vr=False, use_scene_info=True, seed=seed)
        except Exception as e:
            if type(e).__name__ == "InvalidGitRepositoryError" or "InvalidGitRepository" in repr(e):
                raise RuntimeError(f"calvin_env is not installed from a git clone. {INSTALL_HINT}") from e
            raise
        self.cameras = tuple(cameras)
        self.exact_reset = bool(exact_reset)
        self._distractors: DistractorBodies | None = None  # the distractor axis's bodies, once it adds them
        self._built_dynamics: dict[tuple[int, int], tuple[float, ...]] = {}  # (uid, link) -> as built (_as_built)
        use_egl = bool(cfg.env.get("use_egl", False))
        self.description = EnvDescription(
            backend="calvin",
            scene=layout.name,  # a dataset's scene is checked to be it (_check_dataset_scene)
            renderer=("egl" if use_egl else "tiny") if cameras else "none",
            cameras=self.cameras,
            camera_sizes={c: int(camera_sizes.get(c, 0)) for c in cameras} if camera_sizes else {},
            version=f"calvin_env {_commit_of(calvin_env_module)}" + (", exact_reset" if self.exact_reset else ""),
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
        if robot_obs is not None:
            robot_obs = state_vector(robot_obs, ROBOT_OBS_DIM, "robot_obs")
        if scene_obs is not None:
            scene_obs = state_vector(scene_obs, SCENE_OBS_DIM, "scene_obs")
        if self.exact_reset:
            self._clear_carry_over(robot_obs)
        if self._distractors is not None:  # calvin_env's reset moves only its own bodies; the distractors stand first
            self._distractors.place()
        return self._env.reset(robot_obs=robot_obs, scene_obs=scene_obs)

    def _clear_carry_over(self, robot_obs: np.ndarray | None) -> None:
        """What calvin_env's reset keeps from before it: the robot's last gripper action (it ignores
        robot_obs[14]). The blocks' velocities need nothing: calvin_env sets block poses with PyBullet's
        resetBasePositionAndOrientation, which zeroes them (tests/test_env_calvin_real.py)."""
        self._env.robot.gripper_action = 1 if robot_obs is None or robot_obs[14] > 0 else -1

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

    @contextmanager
    def without_cameras(self) -> Iterator[None]:
        """Observations without images inside, as BuiltinEnv.without_cameras: calvin_env's get_obs renders
        each camera in its `cameras` list, so the list is empty meanwhile."""
        cameras, self._env.cameras = self._env.cameras, []
        try:
            yield
        finally:
            self._env.cameras = cameras

    # ------------------------------------------------------------------ the perturbation suite's axes

    # On calvin_env's own physics client (docs/ROBUSTNESS.md#on-envcalvin): the static camera, the blocks' and
    # the furniture's dynamics. calvin_env holds its furniture as ours does (velocity motors at 0 with 4 N as
    # Coulomb friction, the button a 4 N position motor), so the furniture axes mean the same on both.

    def set_static_view(self, eye: np.ndarray, target: np.ndarray, up: np.ndarray) -> None:
        """Move the static camera (the camera axis); without a static camera nothing renders that could move."""
        for camera in self._env.cameras:
            if camera.name == "static":
                camera.viewMatrix = self._env.p.computeViewMatrix([float(v) for v in eye], [float(v) for v in target],
                                                                  [float(v) for v in up])

    def scale_block_dynamics(self, friction: float = 1.0, mass: float = 1.0) -> None:
        """The blocks' lateral friction and mass times these factors (the friction and mass axes)."""
        pb, cid = self._env.p, self._env.cid
        for block in self._env.scene.movable_objects:
            base_mass, base_friction = self._as_built(block.uid, -1)[:2]
            pb.changeDynamics(block.uid, -1, mass=base_mass * mass, lateralFriction=base_friction * friction,
                              physicsClientId=cid)

    def _as_built(self, uid: int, link: int) -> tuple[float, ...]:
        """A body's dynamics before any axis changed them: the setters scale these, so a second call does not
        compound (as the built-in scene's)."""
        key = (uid, link)
        if key not in self._built_dynamics:
            self._built_dynamics[key] = tuple(self._env.p.getDynamicsInfo(uid, link, physicsClientId=self._env.cid))
        return self._built_dynamics[key]

    def set_furniture_dynamics(self, friction: float = 1.0, mass: float = 1.0, damping: float = 0.0) -> None:
        """The furniture axes, as the built-in scene's `set_furniture_dynamics`: friction of the door, drawer and
        switch and the button's spring force times `friction`; door and drawer mass times `mass`; joint damping."""
        pb, cid, scene = self._env.p, self._env.cid, self._env.scene
        for joint in (*scene.doors, *scene.buttons, *scene.switches):
            if friction != 1.0:
                target = {"targetPosition": joint.initial_state} if joint in scene.buttons else {}
                mode = pb.POSITION_CONTROL if joint in scene.buttons else pb.VELOCITY_CONTROL
                pb.setJointMotorControl2(joint.uid, joint.joint_index, controlMode=mode, force=FURNITURE_FORCE * friction,
                                         physicsClientId=cid, **target)
            changes: dict[str, float] = {"jointDamping": damping} if damping else {}
            if joint in scene.doors:  # at 1x too: back to the mass as built
                changes["mass"] = self._as_built(joint.uid, joint.joint_index)[0] * mass
            if changes:
                pb.changeDynamics(joint.uid, joint.joint_index, **changes, physicsClientId=cid)

    def add_distractors(self, kinds: tuple[DistractorKind, ...]) -> None:
        """The distractor axis's bodies in calvin_env's client (its cameras draw every body there)."""
        self._distractors = DistractorBodies(self._env.cid, kinds)

    def set_distractor_poses(self, centres: np.ndarray) -> None:
        """Where the distractors stand from the next reset on (a chain's draw; after add_distractors)."""
        if self._distractors is None:
            raise RuntimeError("set_distractor_poses before add_distractors: this env has no distractors")
        self._distractors.poses = np.asarray(centres, dtype=np.float64).reshape(-1, 3)

    def close(self) -> None:
        env = getattr(self, "_env", None)
        if env is None:
            return
        env.close()
        # calvin_env's __del__ calls close() again; PyBullet reuses client ids from 0, so a second
        # disconnect would close the NEXT env's client. Disown the id (docs/EVALUATION.md).
        if hasattr(env, "ownsPhysicsClient"):
            env.ownsPhysicsClient = False
        self._env = None

    def __enter__(self) -> "CalvinEnv":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
