"""Shared pieces of the policy server tests: a tiny VLA checkpoint, servers in their own process,
observations like the env's, and the actions the same agent gives in-process."""

from __future__ import annotations

import signal
import threading
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np
import pytest

from harness.serve.process import ServerProcess
from harness.serve.server import ServeSettings

ROOT = Path(__file__).resolve().parents[1]
INSTRUCTIONS = ["open the drawer", "push the red block to the left", "turn on the light bulb", "stack the blocks"]


def save_tiny_checkpoint(folder: Path) -> Path:
    """An untrained tiny VLA (tiny_llava, LSTM head, proprio, static camera) saved as a checkpoint."""
    import torch

    from agents.vla.checkpoint import save_checkpoint
    from agents.vla.model import VLAModel
    from harness.data.normalization import ActionNormalizer
    from tests.vla_helpers import make_config, save_tiny

    backbone = save_tiny("tiny_llava", folder / "backbone")
    torch.manual_seed(0)
    model = VLAModel.build(make_config(backbone, "tiny_llava", head="lstm", proprio=True), verbose=False)
    save_checkpoint(folder / "checkpoint", model, ActionNormalizer())
    return folder / "checkpoint"


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory) -> Path:
    return save_tiny_checkpoint(tmp_path_factory.mktemp("served_vla"))


def observations(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Observations shaped like the built-in env's (static camera, robot_obs) for an agent without privileges."""
    rng = np.random.default_rng(seed)
    return [{"rgb_obs": {"rgb_static": rng.integers(0, 256, (200, 200, 3), dtype=np.uint8)},
             "robot_obs": np.concatenate([[0.1, -0.2, 0.5], rng.normal(size=12)])} for _ in range(n)]


def in_process_actions(checkpoint: Path, obs: list[dict[str, Any]], instruction: str) -> list[np.ndarray]:
    """The actions of the agent built in this process, one episode."""
    from agents import load_agent

    agent = load_agent(checkpoint)
    agent.reset()
    return [agent.step(o, instruction) for o in obs]


@contextmanager
def served(agent: dict[str, Any], threads: int = 1, **settings: Any) -> Iterator[ServerProcess]:
    """A policy server in its own process on a free port (one torch thread, as the tests' processes)."""
    server = ServerProcess(agent, ServeSettings(port=0, **settings), threads=threads, start_timeout_s=300)
    with server:
        yield server


def wait_for(condition: Callable[[], bool], timeout_s: float = 30.0, what: str = "the condition") -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout_s} s")
        time.sleep(0.1)


class ThreadProbePolicy:
    """A policy whose actions tell where it runs: action[0] is 1 when `step_batch` runs in the thread that
    built the policy, action[1] is 1 when that thread is not the main one, action[2] is 1 / torch's
    intra-op threads there. Served as `agent=custom agent.factory=tests.serve_helpers:ThreadProbePolicy`."""

    def __init__(self) -> None:
        import torch  # noqa: F401 - imported by the build, as a model's would be (the server sets its threads)

        from agents.base import AgentSpec

        self.spec = AgentSpec(name="thread_probe")
        self.built_in = threading.get_ident()

    def new_session(self) -> None:
        return None

    def reset(self, session: None) -> None:
        pass

    def close_session(self, session: None) -> None:
        pass

    def step_batch(self, sessions: list[None], observations: list[dict[str, Any]], instructions: list[str]) -> list[np.ndarray]:
        import torch

        here = threading.get_ident()
        flags = [float(here == self.built_in), float(here != threading.main_thread().ident), 1 / torch.get_num_threads()]
        return [np.array([*flags, 0, 0, 0, 1.0]) for _ in sessions]


class NoSessionPolicy(ThreadProbePolicy):
    """A probe that cannot open a session (a policy out of some per-session resource)."""

    def new_session(self) -> None:
        raise RuntimeError("no session slot left")


class SlowLoadingPolicy(ThreadProbePolicy):
    """A probe whose build takes `seconds` (a model's load); it writes `started` when the build begins.
    `interrupt_own_thread`: the build sends SIGINT to its own thread first (a Ctrl-C that the kernel
    delivered to the thread that loads rather than to the main one)."""

    def __init__(self, started: str, seconds: float, interrupt_own_thread: bool = False) -> None:
        Path(started).write_text("loading\n")
        if interrupt_own_thread:
            signal.pthread_kill(threading.get_ident(), signal.SIGINT)
        time.sleep(seconds)
        super().__init__()
