"""The policy server on the wire: vla-eval's and openpi's real clients (from PyPI) drive it, bad messages
get error replies while other clients go on, a token keeps strangers out, a vanished client's session is
freed. The served agent is an untrained tiny VLA checkpoint; its actions through the server are compared
with the same checkpoint's in-process."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request

import msgpack
import numpy as np
import pytest
import websockets
from websockets.sync.client import connect

from agents.remote.wire import WireError, pack_message, unpack_message
from tests.openpi_env import openpi_python
from tests.serve_helpers import INSTRUCTIONS, ROOT, checkpoint, in_process_actions, observations, served, wait_for  # noqa: F401

STEPS = 6


def _vla_eval_obs(obs: dict, instruction: str) -> dict:
    """An observation in vla-eval's layout (images, states, task_description) with the full robot_obs as the state,
    as a client written for this server sends it (vla-eval's own CALVIN benchmark sends 8 of the 15 values:
    docs/SERVING.md)."""
    return {"images": {"rgb_static": obs["rgb_obs"]["rgb_static"]}, "states": obs["robot_obs"].astype(np.float32),
            "task_description": instruction}


def _as_sent(obs: list[dict]) -> list[dict]:
    """What the server sees of vla-eval observations: robot_obs in float32."""
    return [{**o, "robot_obs": o["robot_obs"].astype(np.float32)} for o in obs]


# ------------------------------------------------------------------ the message codec against vla-eval's own
def test_messages_round_trip_with_vla_evals_codec():
    from vla_eval.protocol import messages as theirs
    from vla_eval.protocol.numpy_codec import set_image_format

    image = np.random.default_rng(0).integers(0, 256, (20, 30, 3), dtype=np.uint8)
    state = np.arange(8, dtype=np.float32)
    ours = unpack_message(pack_message("observation", {"images": {"cam": image}, "states": state}, seq=7))
    assert ours.type == "observation" and ours.seq == 7
    decoded = theirs.unpack_message(pack_message("action", {"actions": state.astype(np.float64)[:7]}, seq=3))
    assert decoded.type.value == "action" and decoded.seq == 3
    np.testing.assert_array_equal(decoded.payload["actions"], state[:7])
    for fmt in ("png", "raw", "jpeg"):  # vla-eval's client encodes images; png and raw are lossless
        set_image_format(fmt)
        try:
            msg = theirs.Message(theirs.MessageType.OBSERVATION, {"images": {"cam": image}, "states": state}, seq=5)
            got = unpack_message(theirs.pack_message(msg))
        finally:
            set_image_format("png")
        assert got.seq == 5 and got.payload["images"]["cam"].shape == image.shape
        np.testing.assert_array_equal(got.payload["states"], state)
        if fmt != "jpeg":
            np.testing.assert_array_equal(got.payload["images"]["cam"], image)


def _raw(obj) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


ENVELOPE = {"type": "observation", "seq": 1, "timestamp": 0.0}


@pytest.mark.parametrize("data,match", [
    (b"\xc1\x00garbage", "not a msgpack message"),
    (_raw([1, 2]), "must be a msgpack map"),
    (_raw({"type": "observation", "payload": {}}), r"lacks \['seq', 'timestamp'\]"),
    (_raw({**ENVELOPE, "type": "teleport", "payload": {}}), "unknown message type 'teleport'"),
    (_raw({**ENVELOPE, "payload": {"x": {"__ndarray__": True, "data": b"\0" * 16, "dtype": "<c8", "shape": [2]}}}),
     r"dtype '<c8' is not allowed"),
    (_raw({**ENVELOPE, "payload": {"x": {"__ndarray__": True, "data": b"\0" * 8, "dtype": "|O", "shape": [1]}}}),
     r"dtype '\|O' is not allowed"),
    (_raw({**ENVELOPE, "payload": {"x": {"__ndarray__": True, "data": b"\0" * 7, "dtype": "<f4", "shape": [2]}}}),
     "needs 8 bytes, got 7"),
    (msgpack.packb({**ENVELOPE, "payload": msgpack.ExtType(5, b"x")}), "extension type 5"),
])
def test_unreadable_messages_are_named(data, match):
    with pytest.raises(WireError, match=match):
        unpack_message(data)


# ------------------------------------------------------------------ vla-eval's client
async def _vla_eval_episode(url: str, obs: list[dict], instruction: str) -> list[np.ndarray]:
    from vla_eval.connection import Connection

    async with Connection(url, timeout=60, max_retries=1) as conn:
        assert conn.server_info["server"] == "vla-harness" and conn.server_info["agent"]["name"] == "vla"
        await conn.start_episode({"task": instruction})
        actions = [np.asarray((await conn.act(_vla_eval_obs(o, instruction)))["actions"]) for o in obs]
        await conn.end_episode({"success": False})
    return actions


@pytest.fixture(scope="module")
def vla_eval_server(checkpoint):
    with served({"name": "vla", "checkpoint": str(checkpoint)}, protocol="vla_eval", max_message_mb=1,
                max_wait_ms=50) as server:
        yield server


def test_vla_eval_client_drives_the_server(vla_eval_server, checkpoint):
    obs = observations(STEPS, seed=1)
    got = asyncio.run(_vla_eval_episode(vla_eval_server.url, obs, INSTRUCTIONS[0]))
    want = in_process_actions(checkpoint, _as_sent(obs), INSTRUCTIONS[0])
    np.testing.assert_allclose(np.stack(got), np.stack(want), atol=1e-6)


def test_concurrent_clients_are_batched_and_each_gets_its_own_actions(vla_eval_server, checkpoint):
    episodes = [(observations(STEPS, seed=10 + k), INSTRUCTIONS[k]) for k in range(4)]

    async def all_together():
        return await asyncio.gather(*(_vla_eval_episode(vla_eval_server.url, o, i) for o, i in episodes))

    before = vla_eval_server.stats()["batch_sizes"]
    results = asyncio.run(all_together())
    for (obs, instruction), got in zip(episodes, results):
        want = in_process_actions(checkpoint, _as_sent(obs), instruction)
        np.testing.assert_allclose(np.stack(got), np.stack(want), atol=1e-4)
    after = vla_eval_server.stats()["batch_sizes"]
    batched = {int(k): v - before.get(k, 0) for k, v in after.items() if int(k) > 1}
    assert sum(batched.values()) > 0, f"no batch of more than one observation: {after}"


def test_an_observation_the_model_refuses_fails_only_its_own_request(vla_eval_server, checkpoint):
    """Three sessions stepped in batches; one sends a state the model cannot take (8 values, not 15) at its
    third step: that request gets an error, the batch is stepped again without it, and every session,
    the refused one included, goes on as if the refused observation had never come."""
    from vla_eval.connection import Connection

    episodes = [(observations(STEPS, seed=20 + k), INSTRUCTIONS[k]) for k in range(3)]

    async def episode(k: int) -> tuple[list[np.ndarray], list[str]]:
        obs, instruction = episodes[k]
        actions, errors = [], []
        async with Connection(vla_eval_server.url, timeout=60, max_retries=1) as conn:
            await conn.start_episode({})
            for t, o in enumerate(obs):
                if k == 1 and t == 2:
                    bad = {**_vla_eval_obs(o, instruction), "states": np.zeros(8, np.float32)}
                    try:
                        await conn.act(bad)
                    except RuntimeError as e:
                        errors.append(str(e))
                actions.append(np.asarray((await conn.act(_vla_eval_obs(o, instruction)))["actions"]))
        return actions, errors

    async def all_together():
        return await asyncio.gather(*(episode(k) for k in range(3)))

    results = asyncio.run(all_together())
    assert results[1][1] and "robot_obs must have 15 values" in results[1][1][0]
    assert not results[0][1] and not results[2][1]
    for (obs, instruction), (got, _) in zip(episodes, results):
        want = in_process_actions(checkpoint, _as_sent(obs), instruction)
        np.testing.assert_allclose(np.stack(got), np.stack(want), atol=1e-4)


def test_bad_messages_get_error_replies_and_every_connection_goes_on(vla_eval_server):
    obs = observations(2, seed=3)
    with connect(vla_eval_server.url, max_size=None) as bad, connect(vla_eval_server.url, max_size=None) as good:
        def ask(ws, type_, payload, seq):
            ws.send(pack_message(type_, payload, seq))
            return unpack_message(ws.recv(timeout=60))

        good.send(pack_message("episode_start", {}, 1))
        assert ask(good, "observation", _vla_eval_obs(obs[0], "open the drawer"), 2).type == "action"
        replies = []
        bad.send(b"\xc1 not msgpack")
        replies.append(unpack_message(bad.recv(timeout=60)))
        replies.append(ask(bad, "observation", _vla_eval_obs(obs[0], "open the drawer"), 1))  # before episode_start
        bad.send(pack_message("episode_start", {}, 2))
        wrong = {**_vla_eval_obs(obs[0], "x"), "states": {"__ndarray__": True, "data": b"\0" * 16, "dtype": "<c8", "shape": [2]}}
        replies.append(ask(bad, "observation", wrong, 3))
        replies.append(ask(bad, "observation", {**_vla_eval_obs(obs[0], "x"), "images": {"rgb_static": np.zeros((4, 4), np.float32)}}, 4))
        bad.send(b"\x00" * (1 * 2**20 + 10))  # over max_message_mb=1
        replies.append(unpack_message(bad.recv(timeout=60)))
        assert [r.type for r in replies] == ["error"] * 5
        texts = [r.payload["error"] for r in replies]
        assert "not a msgpack message" in texts[0]
        assert "before episode_start" in texts[1]
        assert "dtype '<c8' is not allowed" in texts[2]
        assert "rgb_static (sent as 'images.rgb_static') must be a uint8 (H, W, 3) array" in texts[3]
        assert "over the server's limit" in texts[4]
        assert ask(bad, "observation", _vla_eval_obs(obs[1], "open the drawer"), 5).type == "action"  # still served
        assert ask(good, "observation", _vla_eval_obs(obs[1], "open the drawer"), 3).type == "action"
        bad.send(b"\x00" * (2 * 2**20 + 10))  # over twice the limit: the connection is closed, 1009
        with pytest.raises(websockets.exceptions.ConnectionClosed) as closed:
            bad.recv(timeout=60)
        assert closed.value.rcvd is None or closed.value.rcvd.code == 1009
        assert ask(good, "observation", _vla_eval_obs(obs[0], "open the drawer"), 4).type == "action"


def test_a_client_that_vanishes_frees_its_session(vla_eval_server):
    code = (f"import asyncio, sys; sys.path.insert(0, {str(ROOT)!r})\n"
            "from vla_eval.connection import Connection\n"
            "from tests.test_serve_protocols import _vla_eval_obs\n"
            "from tests.serve_helpers import observations\n"
            "async def main():\n"
            f"    conn = Connection({vla_eval_server.url!r}, timeout=60, max_retries=1)\n"
            "    await conn.connect()\n"
            "    await conn.start_episode({})\n"
            "    await conn.act(_vla_eval_obs(observations(1)[0], 'open the drawer'))\n"
            "    print('stepped', flush=True)\n"
            "    await asyncio.sleep(600)\n"
            "asyncio.run(main())\n")
    before = vla_eval_server.stats()
    client = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert client.stdout.readline().strip() == "stepped"
        assert vla_eval_server.stats()["sessions_open"] == before["sessions_open"] + 1
        os.kill(client.pid, signal.SIGKILL)
    finally:
        client.kill()
        client.wait()
    wait_for(lambda: vla_eval_server.stats()["sessions_open"] == before["sessions_open"], what="the session freed")


# ------------------------------------------------------------------ openpi's client, in a venv of its own (numpy < 2)
OPENPI_CLIENT = """
import json, sys
import numpy as np
from openpi_client.action_chunk_broker import ActionChunkBroker
from openpi_client.websocket_client_policy import WebsocketClientPolicy
url, token, instruction, seed, steps = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
policy = WebsocketClientPolicy(url, api_key=token)
broker = ActionChunkBroker(policy, action_horizon=1)  # how openpi's examples step a chunked policy
rng = np.random.default_rng(seed)
out = {"metadata": policy.get_server_metadata()["agent"]["name"], "actions": []}
for t in range(steps):
    image = rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)
    state = np.concatenate([[0.1, -0.2, 0.5], rng.normal(size=12)]).astype(np.float32)
    request = {"observation/image": image, "observation/state": state, "prompt": instruction}
    if t == steps - 1:  # the reply as it comes: a chunk
        out["chunk_shape"] = list(np.asarray(policy.infer(request)["actions"]).shape)
    else:
        out["actions"].append(np.asarray(broker.infer(request)["actions"]).tolist())
try:
    policy.infer({"observation/image": np.zeros((4, 4), np.float32), "prompt": instruction})
except RuntimeError as e:
    out["error"] = str(e)
print(json.dumps(out))
"""


def test_openpi_client_drives_the_server(checkpoint, tmp_path):
    python = openpi_python()
    script = tmp_path / "drive_server.py"  # not openpi_client.py: that would shadow the package
    script.write_text(OPENPI_CLIENT)
    with served({"name": "vla", "checkpoint": str(checkpoint)}, protocol="openpi", token="s3cret") as server:
        run = subprocess.run([str(python), str(script), server.url, "s3cret", INSTRUCTIONS[1], "5", str(STEPS)],
                             capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout)
    assert out["metadata"] == "vla" and out["chunk_shape"] == [1, 7]
    assert "rgb_static (sent as 'observation/image') must be a uint8 (H, W, 3) array" in out["error"]
    obs = observations(STEPS, seed=5)  # the client's frames: the same generator, the same draws
    want = in_process_actions(checkpoint, _as_sent(obs), INSTRUCTIONS[1])
    np.testing.assert_allclose(np.array(out["actions"]), np.stack(want[:-1]), atol=1e-6)


# ------------------------------------------------------------------ the token
def test_a_token_keeps_clients_without_it_out(checkpoint):
    from vla_eval.connection import Connection

    from agents import make_agent

    with served({"name": "random"}, token="s3cret") as server:
        with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
            connect(server.url)
        assert refused.value.response.status_code == 401
        with pytest.raises(PermissionError, match="refused the token"):
            make_agent("remote", url=server.url, token="wrong")
        http = server.url.replace("ws://", "http://")
        with pytest.raises(urllib.error.HTTPError) as stats:
            urllib.request.urlopen(http + "/stats", timeout=30)
        assert stats.value.code == 401
        assert urllib.request.urlopen(http + "/health", timeout=30).status == 200
        with urllib.request.urlopen(http + "/stats?token=s3cret", timeout=30) as answer:
            assert answer.headers.get_all("Content-Type") == ["application/json"]  # one, not text/plain beside it
            assert "requests" in json.loads(answer.read())
        agent = make_agent("remote", url=server.url, token="s3cret")
        agent.reset()
        assert agent.step({"robot_obs": np.zeros(15)}, "open the drawer").shape == (7,)

        async def with_query_token():  # vla-eval's client sends no headers: the token rides in the URL
            async with Connection(server.url + "/?token=s3cret", timeout=30, max_retries=1) as conn:
                return conn.server_info["agent"]["name"]

        assert asyncio.run(with_query_token()) == "random"


def converse(messages: list[tuple[str, dict]], protocol: str = "native") -> list:
    """A random agent served in this process: the messages in order on one connection; the replies to
    observations and to starts with a seed it refuses, then the sessions left open."""
    from agents import make_policy
    from harness.serve.server import PolicyServer, ServeSettings

    async def run() -> list:
        server = PolicyServer(make_policy("random"), ServeSettings(port=0, protocol=protocol))
        stop, ready = asyncio.Event(), asyncio.get_running_loop().create_future()
        task = asyncio.create_task(server.serve(on_ready=ready.set_result, stop=stop))
        replies = []
        async with websockets.connect(f"ws://127.0.0.1:{await ready}") as ws:
            for seq, (kind, payload) in enumerate(messages, 1):
                await ws.send(pack_message(kind, payload, seq))
                seed = payload.get("seed")
                if kind == "observation" or not (seed is None or type(seed) is int and seed >= 0):  # refused
                    replies.append(unpack_message(await asyncio.wait_for(ws.recv(), 30)))
            replies.append(server.stats.sessions_open)
        stop.set()
        await asyncio.wait_for(task, 30)
        return replies

    return asyncio.run(run())


def test_a_failed_episode_start_leaves_no_session_and_the_next_observation_is_answered():
    """A start the agent cannot take (a negative seed: RandomAgent.new_chain refuses it) after an episode: the old
    session is closed, no new one opens, the next observation gets an error reply instead of waiting forever on
    the closed session, and the server stops cleanly."""
    obs = {"obs": {"robot_obs": np.zeros(15)}, "instruction": "open the drawer"}
    action, failed_start, observation, sessions_open = converse(
        [("episode_start", {"seed": 3}), ("observation", obs), ("episode_start", {"seed": -1}), ("observation", obs)])
    assert action.type == "action" and failed_start.type == "error" and "non-negative" in failed_start.payload["error"]
    assert observation.type == "error" and "before episode_start" in observation.payload["error"]
    assert sessions_open == 0


def test_a_vla_eval_episode_start_with_a_seed_starts_the_agent_the_same_way():
    obs = {"states": np.zeros(15, np.float32), "task_description": "open the drawer"}
    messages = [("episode_start", {"seed": 3}), ("observation", obs), ("episode_end", {}),
                ("episode_start", {"seed": 3}), ("observation", obs), ("episode_start", {}), ("observation", obs),
                ("episode_start", {"seed": 3.0})]
    first, again, unseeded, refused, _ = converse(messages, protocol="vla_eval")
    assert np.array_equal(first.payload["actions"], again.payload["actions"])  # new_chain(3) both times
    assert not np.array_equal(first.payload["actions"], unseeded.payload["actions"])  # the generator ran on
    assert refused.type == "error" and "seed must be an integer or null, got 3.0" in refused.payload["error"]


def _png(size: int, fmt: str = "PNG") -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (size, size)).save(buf, format=fmt)
    return buf.getvalue()


def test_images_decode_only_as_declared_and_within_a_budget(monkeypatch):
    """An image declared png must be a PNG (PIL would otherwise pick any of its decoders for the bytes), and what a
    message's images decode to is capped: a few KB of PNG decode to many MB."""
    import agents.remote.wire as wire

    def message(images: list[bytes]) -> bytes:
        payload = {f"cam{i}": {"__image__": True, "format": "png", "data": d, "shape": [20, 20, 3]} for i, d in enumerate(images)}
        return _raw({**ENVELOPE, "payload": {"images": payload}})

    assert unpack_message(message([_png(20)])).payload["images"]["cam0"].shape == (20, 20, 3)
    with pytest.raises(WireError, match="png image cannot be decoded"):
        unpack_message(message([_png(20, "BMP")]))
    monkeypatch.setattr(wire, "MAX_DECODED_BYTES", 2 * 20 * 20 * 3)
    unpack_message(message([_png(20)] * 2))
    with pytest.raises(WireError, match="decode to more than"):
        unpack_message(message([_png(20)] * 3))


def test_an_openpi_connection_starts_a_new_episode_when_the_instruction_changes():
    """openpi has no episode messages: a connection is a session, and a new instruction is a new episode for any
    served agent (the VLA's batched step did this itself; an agent served one per session never saw a reset)."""
    from agents.remote.wire import pack_openpi
    from harness.serve.protocols import make_codec

    codec = make_codec("openpi")

    def request(prompt: str) -> bytes:
        return pack_openpi({"observation/image": np.zeros((8, 8, 3), np.uint8),
                            "observation/state": np.zeros(15, np.float32), "prompt": prompt})

    assert [codec.read(request(p)).restart for p in ("open the drawer", "open the drawer", "lift the red block",
                                                     "lift the red block")] == [False, False, True, False]


@pytest.mark.parametrize("flag, restarts", [(True, True), (np.bool_(True), True), (np.bool_(False), False), (1, False)])
def test_an_openpi_reset_flag_is_read_as_openpi_client_packs_it(flag, restarts):
    """openpi-client packs numpy scalars as `__npgeneric__`, so a `"reset": np.True_` arrives as numpy's bool,
    not Python's: it restarts the episode all the same (a number is not a flag)."""
    from agents.remote.wire import pack_openpi
    from harness.serve.protocols import make_codec

    request = {"observation/image": np.zeros((8, 8, 3), np.uint8), "observation/state": np.zeros(15, np.float32),
               "prompt": "open the drawer", "reset": flag}
    assert make_codec("openpi").read(pack_openpi(request)).restart is restarts


def test_an_openpi_connection_whose_session_cannot_open_is_told_why():
    """openpi opens a session per connection before any request: its failure reaches the client as openpi's
    error text, not as a bare close."""
    from agents.remote.wire import unpack_openpi

    with served({"name": "custom", "factory": "tests.serve_helpers:NoSessionPolicy"}, protocol="openpi") as server:
        with connect(server.url, open_timeout=30) as ws:
            assert isinstance(unpack_openpi(ws.recv(timeout=30)), dict)  # the metadata, first
            error = ws.recv(timeout=30)
    assert isinstance(error, str) and "could not open a session: RuntimeError: no session slot left" in error


def test_a_refused_observation_names_the_key_the_client_sent():
    from agents.remote.mapping import ObservationMapping, check_observation

    mapping = ObservationMapping.for_protocol("openpi")
    image = np.zeros((8, 8, 3), np.uint8)
    wrong_camera, _ = mapping.decode({"observation/wrist_image": image, "prompt": "open the drawer"})
    with pytest.raises(WireError, match=r"lacks the static camera \(rgb_static \(sent as 'observation/image'\)\)"):
        check_observation(wrong_camera, ["static"], mapping.wire_names())
    batched_state, _ = mapping.decode({"observation/image": image, "observation/state": np.zeros((1, 15), np.float32),
                                       "prompt": "open the drawer"})
    with pytest.raises(WireError, match=r"robot_obs \(sent as 'observation/state'\) must be a 1-d numeric array"):
        check_observation(batched_state, ["static"], mapping.wire_names())
    with pytest.raises(WireError, match=r"^robot_obs must be a 1-d"):  # the native protocol sends env keys
        check_observation(batched_state, ["static"])
