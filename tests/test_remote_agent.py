"""agent=remote against third-party servers: the declared observation mapping and action convention, a
model server written with vla-eval's server API, an evaluation of it on the built-in scene, and a server
slower than the agent's timeout."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.request

import numpy as np
import pybullet as p
import pytest
from PIL import Image

from agents import make_agent
from agents.remote.mapping import ActionConvention, ObservationMapping
from agents.remote.wire import WireError
from harness.eval.config import EvalSettings
from harness.eval.evaluation import run_evaluation
from harness.eval.specs import AgentConfig, EnvConfig
from tests.serve_helpers import ROOT, checkpoint, in_process_actions, observations, served, wait_for  # noqa: F401 (a fixture)
from tests.vla_eval_model_server import CHUNK, expected_chunk

STATES = [0, 1, 2, 3, 4, 5, 6, 14]  # vla-eval's CALVIN state: position, euler, gripper width and action


def _both_cameras(seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    return {"rgb_obs": {"rgb_static": rng.integers(0, 256, (200, 200, 3), dtype=np.uint8),
                        "rgb_gripper": rng.integers(0, 256, (84, 84, 3), dtype=np.uint8)},
            "robot_obs": rng.normal(size=15)}


def test_observation_mapping_encodes_and_decodes():
    obs = _both_cameras()
    mapping = ObservationMapping.for_protocol("vla_eval", cameras={"static": "images.agentview", "gripper": "images.wrist"},
                                              resize=[64, 48], states=STATES)
    wire = mapping.encode(obs, "open the drawer")
    assert set(wire) == {"images", "states", "task_description"} and wire["task_description"] == "open the drawer"
    assert wire["images"]["agentview"].shape == (64, 48, 3) and wire["images"]["wrist"].dtype == np.uint8
    np.testing.assert_array_equal(wire["states"], obs["robot_obs"][STATES].astype(np.float32))
    decoded, instruction = mapping.decode(wire)
    assert instruction == "open the drawer" and decoded["rgb_obs"]["rgb_static"] is wire["images"]["agentview"]
    assert decoded["robot_obs"] is wire["states"]
    openpi = ObservationMapping.for_protocol("openpi").encode(obs, "x")
    assert set(openpi) == {"observation/image", "prompt"}  # states only when asked for
    with pytest.raises(WireError, match="under 'task_description'"):
        mapping.decode({"images": {}})
    for bad, match in [({"cameras": {"top": "x"}}, "maps env cameras"), ({"states": [15]}, r"indices into robot_obs"),
                       ({"resize": [0, 5]}, "resize"), ({"colour": True}, "unknown observation mapping fields")]:
        with pytest.raises(ValueError, match=match):
            ObservationMapping.for_protocol("vla_eval", **bad)


def test_action_convention_reads_chunks_rotations_and_gripper_signs():
    reply = {"actions": np.array([[0.1, 0.2, 0.3, 0.0, 0.0, np.pi / 2, 1.0], [0.4, 0.5, 0.6, np.pi / 2, 0.0, 0.0, -1.0]])}
    chunk = ActionConvention(type="absolute", rotation="axis_angle", gripper_open="negative", execute=0).decode(reply)
    assert len(chunk) == 2
    np.testing.assert_allclose(chunk[0], [0.1, 0.2, 0.3, 0, 0, np.pi / 2, -1.0], atol=1e-12)  # +1 means close here
    np.testing.assert_allclose(chunk[1], [0.4, 0.5, 0.6, np.pi / 2, 0, 0, 1.0], atol=1e-12)
    first = ActionConvention().decode({"actions": np.array([0.1, 0, 0, 0, 0, 0.2, 0.3])})
    assert len(first) == 1 and first[0][6] == 1.0 and first[0][5] == 0.2
    assert ActionConvention(gripper_threshold=0.5).decode({"actions": [0, 0, 0, 0, 0, 0, 0.3]})[0][6] == -1.0
    assert np.isnan(ActionConvention().decode({"actions": [0, 0, 0, 0, 0, 0, np.nan]})[0][6])  # stays invalid
    with pytest.raises(ValueError, match=r"no 'actions' \(action.key\); it has \['action'\]"):
        ActionConvention().decode({"action": [0] * 7})
    with pytest.raises(ValueError, match=r"must be \(7,\) or a chunk \(C, 7\)"):
        ActionConvention().decode({"actions": np.zeros((3, 6))})
    with pytest.raises(ValueError, match="rotation"):
        ActionConvention(rotation="quaternion")


def test_a_relative_axis_angle_rotation_converts_in_radians():
    """A relative rotation is in CALVIN's units (1 = 0.05 rad): a rotation about one axis stays on that axis
    whatever its size ([4, 0, 0] read as 4 rad wrapped to -2.28), and a small one on all axes stays about
    the same (converted as 1.7 rad, [1, 1, 1] became [1.34, 0.18, 1.34])."""
    relative = ActionConvention(type="relative", rotation="axis_angle")
    np.testing.assert_allclose(relative.decode({"actions": [0, 0, 0, 4, 0, 0, 1]})[0][3:6], [4, 0, 0], atol=1e-9)
    small = relative.decode({"actions": [0, 0, 0, 1, 1, 1, 1]})[0][3:6]
    np.testing.assert_allclose(small, [1, 1, 1], atol=0.06)
    assert np.all(np.abs(small - 1) > 1e-6)  # converted, not passed through


def free_port() -> int:
    """A port free now (vla-eval's serve() takes a port number, not 0); taken by another process before the
    server binds it, the server exits and `healthy` says why."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def model_server():
    """tests/vla_eval_model_server.py, served by vla-eval's own serve(), in a process of its own."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "tests.vla_eval_model_server", str(port)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def healthy() -> bool:
        assert proc.poll() is None, proc.stderr.read()
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).status == 200
        except OSError:
            return False

    try:
        wait_for(healthy, 120, "vla-eval's model server starting")
        yield f"ws://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


THIRD_PARTY = {"protocol": "vla_eval", "observation": {"resize": [64, 64], "states": STATES},
               "action": {"type": "absolute", "rotation": "axis_angle", "gripper_open": "negative", "execute": 0}}


def test_remote_agent_against_a_vla_eval_model_server(model_server):
    agent = make_agent("remote", url=model_server, **THIRD_PARTY)
    assert agent.spec.action_type == "absolute" and agent.spec.cameras == ("static",)
    assert agent.spec.extra["server"]["model_server"] == "GeometryServer"  # from vla-eval's HELLO reply
    obs = observations(CHUNK + 2, seed=4)
    agent.new_chain(0)
    agent.reset()
    got = [agent.step(o, "open the drawer") for o in obs]
    agent.reset()  # a new episode: a new request at once, whatever was left of the chunk
    after_reset = agent.step(obs[1], "open the drawer")
    calls = [(0, obs[0])] * CHUNK + [(1, obs[CHUNK])] * 2  # the whole chunk is executed before the next request
    for t, (action, (call, seen)) in enumerate(zip(got, calls)):
        state = seen["robot_obs"][STATES].astype(np.float32)
        image = np.asarray(Image.fromarray(seen["rgb_obs"]["rgb_static"]).resize((64, 64), Image.BILINEAR))
        raw = expected_chunk(state, image, call)[t % CHUNK]
        rotvec = raw[3:6]
        quat = p.getQuaternionFromAxisAngle((rotvec / np.linalg.norm(rotvec)).tolist(), float(np.linalg.norm(rotvec)))
        np.testing.assert_allclose(action[:3], raw[:3], atol=1e-6)
        np.testing.assert_allclose(action[3:6], p.getEulerFromQuaternion(quat), atol=1e-6)
        assert action[6] == (-1.0 if raw[6] > 0 else 1.0)  # the server's +1 closes
    assert after_reset[0] == pytest.approx(float(obs[1]["robot_obs"][0]), abs=1e-6)  # the episode's first call


def test_evaluating_a_third_party_server_on_the_builtin_scene(model_server, tmp_path):
    agent = AgentConfig("remote", {"url": model_server, **THIRD_PARTY})
    results = run_evaluation(EvalSettings(num_chains=2, ep_len=8, workers=0, progress=False, server="off", videos=0,
                                                 video_failures=0),
                             EnvConfig(), agent, tmp_path)
    assert results["num_chains"] == 2 and results["agent"]["name"] == "remote"
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    reasons = [s["reason"] for r in records for s in r["subtasks"]]
    assert reasons and set(reasons) <= {"success", "timeout"}, records


def test_a_server_slower_than_the_timeout_is_an_agent_error(tmp_path):
    with served({"name": "sleepy", "factory": "tests.eval_agents:Sleepy", "delay_s": 5.0}) as server:
        agent = AgentConfig("remote", {"url": server.url, "timeout_s": 0.5})
        results = run_evaluation(EvalSettings(num_chains=1, ep_len=5, workers=0, progress=False, videos=0, video_failures=0), EnvConfig(), agent,
                                 tmp_path)
    assert results["failure_reasons"]["agent_error"] == 1
    record = json.loads((tmp_path / "results.jsonl").read_text())
    assert "no reply from the policy server" in record["subtasks"][0]["message"]
    assert "within 0.5 s (agent.timeout_s)" in record["subtasks"][0]["message"]


def test_a_server_that_goes_away_during_the_handshake_is_unavailable_and_retried(monkeypatch):
    """A server killed while a client connects (CI saw it while a killed server came back) can close the socket
    before the client's request is out: websockets then raises ConnectionClosedError from the handshake rather
    than a handshake error. That is 'unavailable' (retried until agent.reconnect_timeout_s), never a worker
    crash. (The race itself cannot be forced from outside websockets, so its exception is raised here.)"""
    import websockets.exceptions
    import websockets.sync.client

    from agents.base import AgentUnavailable

    attempts = []

    def closed_during_the_handshake(*args, **kwargs):
        attempts.append(args[0])
        raise websockets.exceptions.ConnectionClosedError(None, None)

    monkeypatch.setattr(websockets.sync.client, "connect", closed_during_the_handshake)
    with pytest.raises(AgentUnavailable, match=r"cannot reach the policy server .*ConnectionClosedError.*"
                                               r"agent.reconnect_timeout_s"):
        make_agent("remote", url="ws://127.0.0.1:9", reconnect_timeout_s=0.3)
    assert len(attempts) >= 2  # retried, not given up on the first close


def test_a_served_agent_that_reads_the_layout_is_bound_to_the_clients_scene():
    """A server has no env: make_policy binds the scripted expert to the scene its clients' env is in (the
    evaluation's server=on passes env.scene), as the env would (`bind_env`)."""
    from agents import make_policy

    policy = make_policy("scripted", scene="B")
    assert policy.new_session().spec.extra == {"scene": "B"} and policy.spec.extra == {"scene": "B"}
    with pytest.raises(ValueError, match="block_sizes are the sizes of the scene's blocks; give the scene too"):
        make_policy("scripted", block_sizes={"red": "large"})  # would have been dropped without a word


def test_a_start_the_server_refuses_is_the_error_the_next_step_raises():
    """episode_start has no reply unless it fails: the client then reports that error (not the observation's
    'before episode_start' that follows from it), and a good start after it works."""
    from agents.remote.client import NativeChannel

    obs = {"obs": {"robot_obs": np.zeros(15)}, "instruction": "open the drawer"}
    with served({"name": "random"}, protocol="native") as server:
        channel = NativeChannel(server.url)
        channel.connect()
        try:
            channel.start_episode(-1)  # RandomAgent.new_chain refuses a negative seed
            with pytest.raises(RuntimeError, match="non-negative"):
                channel.act(obs)
            channel.start_episode(3)
            assert channel.act(obs) is not None
        finally:
            channel.close()


def test_an_openpi_episode_starts_afresh_on_a_server_that_keeps_state(checkpoint):
    """openpi's protocol has no episode messages, and our server keeps a session (the VLA's history window) per
    connection: the remote agent's next episode is a new connection, so two episodes with the same instruction
    and observations give the same actions as in-process (it carried the first episode's history into the
    second)."""
    obs = observations(3, seed=6)
    expected = in_process_actions(checkpoint, obs, "open the drawer")
    with served({"name": "vla", "checkpoint": str(checkpoint)}, protocol="openpi") as server:
        agent = make_agent("remote", url=server.url, protocol="openpi", observation={"states": list(range(15))})
        try:
            for chain in range(2):
                agent.new_chain(chain)
                agent.reset()
                got = [agent.step(o, "open the drawer") for o in obs]
                for a, b in zip(got, expected):
                    np.testing.assert_allclose(np.asarray(a)[:6], b[:6], atol=1e-4)
                    assert np.asarray(a)[6] == b[6]
        finally:
            agent.close()


def test_the_servers_token_is_never_written_and_connection_waits_do_not_change_the_run():
    """The run key (run.json) held the token in plain text, and a rerun with another token or connect timeout
    was refused as another configuration."""
    def key(**kwargs):
        return EvalSettings().run_key(EnvConfig(), AgentConfig("remote", {"url": "ws://gpu:8000", **kwargs}))

    first = key(token="s3cret", connect_timeout_s=3, reconnect_timeout_s=60)
    assert "s3cret" not in json.dumps(first)
    assert first == key(token="other") == key()
    assert key(timeout_s=1) != key()  # the reply timeout decides agent_error: it stays


def test_a_server_of_another_protocol_is_named_and_no_connection_is_left_open():
    """A native agent pointed at an openpi server: the error says to check agent.protocol, and the failed agent
    leaves no connection behind (each failed check left a socket and its reading thread open)."""
    import threading

    with served({"name": "random"}, protocol="openpi") as server:
        before = threading.active_count()
        for _ in range(3):
            with pytest.raises(RuntimeError, match=r"is it a native server\? agent.protocol"):
                make_agent("remote", url=server.url, protocol="native", connect_timeout_s=5)
        wait_for(lambda: threading.active_count() <= before, timeout_s=10, what="the failed agents' threads to end")
