"""env=calvin: the adapter around an installed calvin_env.

These run with or without calvin_env installed (tests/test_env_calvin_real.py covers the real one): they
install a stand-in package with calvin_env's layout (a `calvin_env` package next to a hydra `conf/` folder whose env config
instantiates `calvin_env.envs.play_table_env.PlayTableSimEnv`). The stand-in records how it was built
and runs the built-in scene underneath, so the adapter's config composition, validation and
delegation are exercised end to end.
"""

from __future__ import annotations

import sys
import textwrap

import numpy as np
import pytest

from harness.envs import make_env

STAND_IN_ENV = '''
from harness.envs.builtin import BuiltinEnv

BUILT = []


class PlayTableSimEnv:
    def __init__(self, robot_cfg, seed, use_vr, bullet_time_step, cameras, show_gui, scene_cfg, use_scene_info, use_egl, control_freq):
        BUILT.append(dict(robot=robot_cfg, cameras=dict(cameras), scene=scene_cfg, use_egl=use_egl, show_gui=show_gui,
                          use_vr=use_vr, use_scene_info=use_scene_info, seed=seed))
        self.ownsPhysicsClient = True
        self.closed = 0
        # calvin_env's own scene configs have no name, only their table (a dataset's merged_config.yaml)
        name = scene_cfg.get("name") or scene_cfg["objects"]["fixed_objects"]["table"]["file"].split("/")[0]
        self._env = BuiltinEnv(scene=name[-1], cameras=tuple(cameras))
        self.steps = []

    def reset(self, robot_obs=None, scene_obs=None):
        return self._env.reset(robot_obs, scene_obs)

    def step(self, action):
        self.steps.append(action)
        return self._env.step(action)

    def get_obs(self):
        return self._env.get_obs()

    def get_info(self):
        return self._env.get_info()

    def close(self):
        if self.ownsPhysicsClient:
            self.closed += 1
            self._env.close()
'''


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))


@pytest.fixture()
def stand_in_calvin(tmp_path, monkeypatch):
    root = tmp_path / "calvin_env_clone"
    write(root / "calvin_env" / "__init__.py", "")
    write(root / "calvin_env" / "envs" / "__init__.py", "")
    (root / "calvin_env" / "envs" / "play_table_env.py").write_text(STAND_IN_ENV)
    conf = root / "conf"
    write(conf / "config_data_collection.yaml", """
        defaults:
          - cameras: static_and_tactile
          - robot: panda
          - scene: calvin_scene_A
          - env: play_table_env
          - _self_
        seed: 0
    """)
    for name, keys in (("static_and_tactile", ("static", "tactile")), ("static_and_gripper", ("static", "gripper"))):
        body = "\n".join(f"{k}:\n  name: {k}\n  width: {200 if k == 'static' else 84}\n  height: {200 if k == 'static' else 84}" for k in keys)
        write(conf / "cameras" / f"{name}.yaml", body + "\n")
    write(conf / "robot" / "panda.yaml", "name: panda\nurdf: panda.urdf\n")
    write(conf / "robot" / "panda_longer_finger.yaml", "name: panda_longer_finger\nurdf: panda_longer_finger.urdf\n")
    for s in "ABCD":
        write(conf / "scene" / f"calvin_scene_{s}.yaml", f"name: calvin_scene_{s}\n")
    write(conf / "env" / "play_table_env.yaml", """
        _target_: calvin_env.envs.play_table_env.PlayTableSimEnv
        _recursive_: false
        cameras: ${cameras}
        seed: ${seed}
        bullet_time_step: 240.0
        use_vr: false
        show_gui: true
        robot_cfg: ${robot}
        scene_cfg: ${scene}
        use_scene_info: false
        use_egl: true
        control_freq: 30
    """)
    monkeypatch.syspath_prepend(str(root))
    for mod in [m for m in sys.modules if m.startswith("calvin_env")]:
        monkeypatch.delitem(sys.modules, mod)
    import calvin_env.envs.play_table_env as module

    yield module, root
    module.BUILT.clear()
    for mod in [m for m in sys.modules if m.startswith("calvin_env")]:
        del sys.modules[mod]  # the stand-in's modules go; monkeypatch then puts back any real ones


def test_missing_calvin_env_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "calvin_env", None)  # import calvin_env -> ImportError
    with pytest.raises(ImportError, match="scripts/install_calvin_env.sh"):
        make_env("calvin", scene="D")


def test_config_is_composed_from_calvins_own_conf(stand_in_calvin):
    module, _ = stand_in_calvin
    env = make_env("calvin", scene="D")
    built = module.BUILT[-1]
    assert built["robot"]["name"] == "panda_longer_finger"
    assert built["scene"]["name"] == "calvin_scene_D"
    assert set(built["cameras"]) == {"static", "gripper"}  # static_and_gripper: tacto never needed
    assert built["use_egl"] is False and built["show_gui"] is False and built["use_scene_info"] is True
    assert env.description.backend == "calvin" and env.description.renderer == "tiny"
    obs = env.reset()
    assert obs["rgb_obs"]["rgb_static"].shape == (200, 200, 3) and obs["scene_obs"].shape == (24,)
    env.close()


def test_only_requested_cameras_are_built(stand_in_calvin):
    module, _ = stand_in_calvin
    env = make_env("calvin", scene="B", cameras=())
    assert module.BUILT[-1]["cameras"] == {}
    assert env.reset()["rgb_obs"] == {}
    env.close()


def test_actions_are_validated_and_never_modified(stand_in_calvin):
    env = make_env("calvin", scene="D", cameras=())
    env.reset()
    with pytest.raises(ValueError, match="7 numbers"):
        env.step(np.zeros(8))
    with pytest.raises(ValueError, match="exactly 1"):
        env.step(np.array([0, 0, 0, 0, 0, 0, 0.2]))
    action = np.array([0.5, 0, 0, 0, 0, 0, 1.0])
    obs, reward, done, info = env.step(action)
    assert action[0] == 0.5 and env._env.steps[-1] is not action  # calvin_env 1431a46 scaled in place
    env.step(((0.1, -0.2, 0.5), (np.pi, 0, np.pi / 2), -1))
    assert isinstance(env._env.steps[-1], tuple) and env._env.steps[-1][2] == -1
    assert set(info["scene_info"]) >= {"movable_objects", "doors", "lights"}
    # a reset's state vectors are checked as the built-in env's: NaN went on into PyBullet
    with pytest.raises(ValueError, match="scene_obs must be finite"):
        env.reset(scene_obs=np.full(24, np.nan))
    with pytest.raises(ValueError, match=r"robot_obs must have shape \(15,\)"):
        env.reset(robot_obs=np.zeros(14))
    env.close()


def test_close_disowns_the_client(stand_in_calvin):
    env = make_env("calvin", scene="D", cameras=())
    inner = env._env
    env.close()
    inner.close()  # calvin_env's __del__ would call this again: it must not disconnect another client
    assert inner.closed == 1
    env.close()  # idempotent


def test_config_from_a_dataset(stand_in_calvin, tmp_path):
    module, root = stand_in_calvin
    hydra_dir = tmp_path / "task_D_D" / "validation" / ".hydra"
    write(hydra_dir / "merged_config.yaml", """
        cameras:
          static: {name: static, width: 200, height: 200}
          gripper: {name: gripper, width: 84, height: 84}
          tactile: {name: tactile, width: 120, height: 160}
        robot: {name: panda_longer_finger}
        scene:
          objects:
            fixed_objects:
              table: {file: calvin_table_D/urdf/calvin_table_D.urdf}
        seed: 0
        env:
          _target_: calvin_env.envs.play_table_env.PlayTableSimEnv
          _recursive_: false
          cameras: ${cameras}
          seed: ${seed}
          bullet_time_step: 240.0
          use_vr: false
          show_gui: false
          robot_cfg: ${robot}
          scene_cfg: ${scene}
          use_scene_info: true
          use_egl: true
          control_freq: 30
    """)
    env = make_env("calvin", dataset_path=tmp_path / "task_D_D", cameras=("static",))
    assert set(module.BUILT[-1]["cameras"]) == {"static"}  # tactile dropped: no tacto needed
    assert env.description.scene == "D"
    # env.renderer owns the renderer: CALVIN's recordings say use_egl: true, and it rendered with EGL
    assert module.BUILT[-1]["use_egl"] is False and env.description.renderer == "tiny"
    env.close()
    # the dataset's table decides what is loaded: env.scene=A bound A's block order to D's blocks, silently
    with pytest.raises(ValueError, match=r"task_D_D loads scene D \(its merged_config.yaml's table\), but env.scene is A"):
        make_env("calvin", scene="A", dataset_path=tmp_path / "task_D_D", cameras=("static",))
    with pytest.raises(FileNotFoundError, match="merged_config.yaml"):
        make_env("calvin", dataset_path=tmp_path / "nowhere")
