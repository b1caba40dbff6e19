"""A model server written with vla-eval's server API (PredictModelServer), for the remote agent's tests:
python -m tests.vla_eval_model_server PORT.

Its actions are absolute (position, axis-angle rotation, gripper with +1 = close), a chunk of CHUNK per
observation, computed from the observation and its place in the episode (vla-eval's `ctx.step`: the
observations the episode sent before it), so that a test can tell what to expect.
"""

from __future__ import annotations

import sys

import numpy as np
from vla_eval.model_servers.predict import PredictModelServer
from vla_eval.model_servers.serve import serve

CHUNK = 4


def expected_chunk(state: np.ndarray, image: np.ndarray, call: int) -> np.ndarray:
    """The chunk the server answers the `call`-th observation of an episode with (from 0)."""
    brightness = float(image.mean()) / 255.0
    return np.array([[*(state[:3] + 0.01 * k + [0.001 * call, 0, 0]), 0.1 * (k + 1), 0.0, brightness,
                      1.0 if (call + k) % 2 else -1.0] for k in range(CHUNK)], dtype=np.float64)


class GeometryServer(PredictModelServer):
    def predict(self, obs, ctx):
        return {"actions": expected_chunk(np.asarray(obs["states"]), np.asarray(obs["images"]["rgb_static"]), ctx.step)}

    def get_action_spec(self):
        return {}

    def get_observation_spec(self):
        return {}


if __name__ == "__main__":
    serve(GeometryServer(), host="127.0.0.1", port=int(sys.argv[1]))
