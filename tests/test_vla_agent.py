"""The VLA agent: cached steps equal recomputing the window, execution strategies, the public API."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

from agents.base import Agent
from agents.vla.agent import METRES_PER_UNIT, ExecutionConfig, VLAAgent
from agents.vla.inference import EpisodeStream
from harness.data.normalization import ActionNormalizer
from tests.vla_helpers import WINDOW, build_model, chunk_for, frames_of, make_batch, tiny_dir  # noqa: F401  (fixture)

STEPS = WINDOW + 3  # past the point where the window starts to slide

CASES = [("tiny_llava", h, "post") for h in ("mlp", "lstm", "gpt", "discrete")] + [
    ("tiny_paligemma", "lstm", "post"), ("tiny_paligemma", "gpt", "interleaved"),
    ("tiny_qwen2_vl", "gpt", "post"), ("tiny_llava", "lstm", "interleaved"), ("tiny_llava", "discrete", "interleaved"),
    ("tiny_kosmos2", "lstm", "interleaved"), ("tiny_kosmos2", "discrete", "interleaved"),
    ("tiny_mllama", "gpt", "post"), ("tiny_mllama", "lstm", "interleaved"), ("tiny_mllama", "discrete", "interleaved"),
    ("scratch", "lstm", "post"), ("scratch", "gpt", "post"),
]


@pytest.mark.parametrize("name,head,history", CASES)
def test_cached_step_equals_recomputing_the_window(tiny_dir, name, head, history):
    model = build_model(tiny_dir, name, head=head, history=history, gripper=True, proprio=True,
                        chunk=chunk_for(head, history)).eval()
    frames = frames_of(make_batch(b=1, w=STEPS, gripper=True, seed=4))
    cached, recompute = EpisodeStream(model, cached=True), EpisodeStream(model, cached=False)
    for f in frames:
        torch.testing.assert_close(cached.step(f), recompute.step(f), atol=2e-5, rtol=1e-4)


def test_cached_path_runs_the_backbone_once_per_step(tiny_dir):
    model = build_model(tiny_dir, "tiny_llava", head="gpt").eval()
    calls = []
    model.vlm.model.register_forward_hook(lambda m, args, kwargs, out: calls.append(kwargs["input_ids"].shape[0]),
                                          with_kwargs=True)
    stream = EpisodeStream(model, cached=True)
    for f in frames_of(make_batch(b=1, w=STEPS)):
        stream.step(f)
    assert calls == [1] * STEPS  # one sequence (the new frame) per step


def _agent(tiny_dir, obs_rng=None, **cfg) -> VLAAgent:
    model = build_model(tiny_dir, "tiny_llava", head="lstm", gripper=True, proprio=True)
    return VLAAgent(model, ActionNormalizer(), ExecutionConfig(**cfg), checkpoint="ckpt")


def _obs(rng) -> dict:
    return {"rgb_obs": {"rgb_static": rng.integers(0, 256, (200, 200, 3), dtype=np.uint8),
                        "rgb_gripper": rng.integers(0, 256, (84, 84, 3), dtype=np.uint8)},
            "robot_obs": np.concatenate([[0.1, -0.2, 0.5], rng.normal(size=12)])}


def test_agent_protocol_and_action_format(tiny_dir):
    agent = _agent(tiny_dir)
    assert isinstance(agent, Agent)
    assert agent.spec.cameras == ("static", "gripper") and not agent.spec.privileged
    assert agent.spec.action_type == "relative"
    agent.reset()
    action = agent.step(_obs(np.random.default_rng(0)), "open the drawer")
    assert action.shape == (7,) and action.dtype == np.float64
    assert np.abs(action[:6]).max() <= 0.65 and action[6] in (-1.0, 1.0)
    with pytest.raises(ValueError, match="rgb_gripper"):
        agent.step({"rgb_obs": {"rgb_static": np.zeros((200, 200, 3), np.uint8)}, "robot_obs": np.zeros(15)}, "x")


class _Recorder:
    """Wraps the agent's policy to record every chunk the model produced."""

    def __init__(self, agent: VLAAgent):
        self.chunks: list[torch.Tensor] = []
        predict = agent.policy.predict_chunks

        def recorded(episodes, frames):
            chunks = predict(episodes, frames)
            self.chunks.append(chunks[0].cpu())
            return chunks

        agent.policy.predict_chunks = recorded


def test_chunk_execution_plays_k_actions_of_one_chunk(tiny_dir):
    agent = _agent(tiny_dir, execution="chunk", exec_horizon=2)
    rec = _Recorder(agent)
    rng = np.random.default_rng(0)
    actions = [agent.step(_obs(rng), "open the drawer") for _ in range(4)]
    norm = ActionNormalizer()
    expected = [rec.chunks[0][0], rec.chunks[0][1], rec.chunks[2][0], rec.chunks[2][1]]
    for got, want in zip(actions, expected):
        np.testing.assert_allclose(got, norm.denormalize(want.numpy()), atol=1e-6)


def test_temporal_ensembling_weights_overlapping_chunks(tiny_dir):
    decay = 0.5
    agent = _agent(tiny_dir, execution="ensemble", ensemble_decay=decay)
    rec = _Recorder(agent)
    rng = np.random.default_rng(0)
    actions = [agent.step(_obs(rng), "open the drawer") for _ in range(3)]
    c = rec.chunks  # step 2 sees chunk 0 (entry 2), chunk 1 (entry 1), chunk 2 (entry 0); oldest weighs most
    w = np.exp(-decay * np.arange(3))
    mixed = (w[0] * c[0][2] + w[1] * c[1][1] + w[2] * c[2][0]).numpy() / w.sum()
    np.testing.assert_allclose(actions[2], ActionNormalizer().denormalize(mixed), atol=1e-6)


def test_planned_tcp_path_integrates_the_chunk_from_the_tcp(tiny_dir):
    agent = _agent(tiny_dir)
    rec = _Recorder(agent)
    obs = _obs(np.random.default_rng(0))
    agent.step(obs, "open the drawer")
    path = agent.planned_tcp_path()
    rel = ActionNormalizer().denormalize(rec.chunks[0].numpy())
    assert path.shape == (rec.chunks[0].shape[0], 3)
    np.testing.assert_allclose(path[0], obs["robot_obs"][:3] + rel[0, :3] * METRES_PER_UNIT)
    np.testing.assert_allclose(path[-1], obs["robot_obs"][:3] + rel[:, :3].sum(0) * METRES_PER_UNIT)


def test_new_instruction_starts_a_fresh_history(tiny_dir):
    agent = _agent(tiny_dir)
    rng = np.random.default_rng(0)
    for _ in range(3):
        agent.step(_obs(rng), "open the drawer")
    obs = _obs(rng)
    after_switch = agent.step(obs, "close the drawer")
    fresh = _agent(tiny_dir)
    np.testing.assert_allclose(after_switch, fresh.step(obs, "close the drawer"), atol=1e-6)


def test_importing_agents_stays_light():
    code = "import sys, agents; assert callable(agents.load_agent); print('torch' in sys.modules, 'transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "False False"


def test_a_huge_instruction_is_cut_to_the_configured_tokens(tiny_dir):
    """A 100,000-character instruction: the backbone sees at most `max_instruction_tokens` of it (the step's
    cost is bounded by the token count), the cut is warned about once, and short instructions are untouched."""
    agent = _agent(tiny_dir)
    model = agent.model
    limit = model.cfg.backbone.max_instruction_tokens
    seen = []
    model.vlm.model.register_forward_hook(lambda m, args, kwargs, out: seen.append(kwargs["input_ids"].shape[1]),
                                          with_kwargs=True)
    huge = " ".join(["push the red block to the left and then"] * 2501)[:100_000]
    rng = np.random.default_rng(0)
    agent.step(_obs(rng), "open the drawer")
    short_length = seen[-1]
    with pytest.warns(UserWarning, match=rf"cut to its first {limit} \(model.backbone.max_instruction_tokens\)"):
        action = agent.step(_obs(rng), huge)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once: the next steps say nothing
        agent.step(_obs(rng), huge)
    assert action.shape == (7,) and np.isfinite(action).all()
    instruction_tokens = len(model.backbone.tokenizer("open the drawer", add_special_tokens=False)["input_ids"])
    assert seen[-1] == seen[-2] <= short_length - instruction_tokens + limit + 1  # +1: a merge at the cut
    assert model.prompt("open the drawer") == "What action should the robot take to open the drawer?"
    assert model.prompt(huge).startswith("What action should the robot take to push the red block")
    # fewer characters than the limit, more tokens: non-ASCII text takes several byte-level tokens a character
    wide = "🤖" * (limit - 1)
    assert len(model.backbone.tokenizer(wide, add_special_tokens=False)["input_ids"]) > limit
    assert len(model.backbone.tokenizer(model._bounded(wide), add_special_tokens=False)["input_ids"]) <= limit + 1
