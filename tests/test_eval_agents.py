"""agents: the registry, the random and replay agents, and a light `import agents`."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from agents import AGENTS, Agent, AgentSpec, make_agent
from agents.replay import ReplayAgent
from agents.random_agent import RandomAgent


def test_registry_names_and_unknown_name():
    assert {"random", "replay", "scripted", "vla"} <= set(AGENTS)
    with pytest.raises(ValueError, match="unknown agent 'nope'.*random.*replay.*scripted.*vla"):
        make_agent("nope")
    with pytest.raises(ValueError, match="checkpoint"):
        make_agent("vla")


def test_import_agents_stays_light():
    code = "import sys, agents; agents.make_agent('random'); print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "False"]


def test_random_agent_is_reproducible_per_chain_and_in_range():
    agent = make_agent("random", seed=3)
    assert isinstance(agent, Agent) and isinstance(agent.spec, AgentSpec) and agent.spec.cameras == ()

    def chain(seed: int) -> np.ndarray:
        agent.new_chain(seed)
        agent.reset()
        return np.stack([agent.step({}, "x") for _ in range(50)])

    a, b, c = chain(7), chain(8), chain(7)
    assert np.array_equal(a, c) and not np.array_equal(a, b)
    assert np.all(np.abs(a[:, :6]) <= 1) and set(np.unique(a[:, 6])) <= {-1.0, 1.0}
    assert len(set(a[:, 6])) == 2  # the gripper does switch
    wide = RandomAgent(scale=1.5)
    wide.reset()
    assert np.abs(np.stack([wide.step({}, "x") for _ in range(50)])[:, :6]).max() > 1
    # the agent's own seed draws another agent on the same chains (new_chain's reseed ignored it)
    other = make_agent("random", seed=4)
    other.new_chain(7)
    other.reset()
    assert not np.array_equal(a, np.stack([other.step({}, "x") for _ in range(50)]))
    with pytest.raises(ValueError, match="seed must be >= 0"):
        RandomAgent(seed=-1)


def test_replay_agent_sources_and_playback(tmp_path):
    actions = np.zeros((3, 7))
    actions[:, 0] = [0.1, 0.2, 0.3]
    actions[:, 6] = [1, -1, -1]
    np.save(tmp_path / "a.npy", actions)
    np.savez(tmp_path / "b.npz", rel_actions=actions)
    for source in (actions, tmp_path / "a.npy", str(tmp_path / "a.npy")):
        agent = make_agent("replay", actions=source)
        agent.reset()
        played = [agent.step({}, "x") for _ in range(5)]
        assert np.array_equal(np.stack(played[:3]), actions)
        assert np.array_equal(played[3], [0, 0, 0, 0, 0, 0, -1])  # used up: hold still, last gripper
        agent.reset()  # a new subtask plays on
        assert np.array_equal(agent.step({}, "x"), [0, 0, 0, 0, 0, 0, -1])
        agent.new_chain(0)  # a new chain starts again
        assert np.array_equal(agent.step({}, "x"), actions[0])
    agent = ReplayAgent(tmp_path / "b.npz", key="rel_actions")
    assert agent.spec.checkpoint == str(tmp_path / "b.npz") and agent.spec.extra["steps"] == 3
    absolute = ReplayAgent(actions, action_type="absolute")
    for _ in range(4):
        last = absolute.step({}, "x")
    assert np.array_equal(last, actions[-1])  # absolute: holds the last pose


def test_replay_agent_rejects_bad_sources(tmp_path):
    with pytest.raises(ValueError, match=r"\(T, 7\).*\(4, 6\)"):
        ReplayAgent(np.zeros((4, 6)))
    np.savez(tmp_path / "c.npz", other=np.zeros((2, 7)))
    with pytest.raises(ValueError, match="no array 'actions'.*other"):
        ReplayAgent(tmp_path / "c.npz")
    with pytest.raises(ValueError, match=".npy or .npz"):
        ReplayAgent(tmp_path / "c.txt")
