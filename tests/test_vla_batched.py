"""Episodes stepped together (`step_episodes` with a batch) give each episode what stepping it alone gives.

The batches mix what a policy server sees: episodes with different instructions (prompts of different
lengths: the backbone runs on right-padded sequences), started at different times (some windows filling
through their caches, others sliding), joining and leaving between steps.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from agents.vla.agent import ExecutionConfig, VLAAgent, VLAPolicy
from agents.vla.inference import EpisodeStream, new_episode, step_episodes
from harness.data.normalization import ActionNormalizer
from tests.vla_helpers import (INSTRUCTIONS, WINDOW, build_model, chunk_for, frames_of, make_batch,  # noqa: F401
                               tiny_dir)

STEPS = WINDOW + 4
EPISODES = 4

CASES = [("tiny_llava", h, "post") for h in ("mlp", "lstm", "gpt", "discrete")] + [
    ("tiny_idefics3", "lstm", "post"), ("tiny_paligemma", "lstm", "post"), ("tiny_qwen2_vl", "gpt", "post"),
    ("tiny_llava", "lstm", "interleaved"), ("tiny_kosmos2", "discrete", "interleaved"),
    ("tiny_mllama", "lstm", "post"), ("tiny_mllama", "lstm", "interleaved"),
    ("scratch", "lstm", "post"), ("scratch", "gpt", "post"),
]


def _episodes(gripper: bool) -> list[list[dict]]:
    """EPISODES episodes of STEPS frames, each with its own instruction."""
    return [frames_of(make_batch(b=1, w=STEPS, gripper=gripper, seed=10 + e, instructions=[INSTRUCTIONS[e]]))
            for e in range(EPISODES)]


def _staggered(model, episodes: list[list[dict]]) -> tuple[list[list[torch.Tensor]], list[list[torch.Tensor]]]:
    """Chunks of every episode stepped alone, and stepped in batches where episode e starts at round e
    (so the batches mix filling and sliding windows), in an order that changes, and episodes leave as
    they end."""
    alone = []
    for frames in episodes:
        stream = EpisodeStream(model)
        alone.append([stream.step(f) for f in frames])
    batched: list[list[torch.Tensor]] = [[] for _ in episodes]
    states = [new_episode(model) for _ in episodes]
    for r in range(STEPS + len(episodes) - 1):
        active = [e for e in range(len(episodes)) if 0 <= r - e < STEPS]
        active = active[::-1] if r % 2 else active  # no order to rely on (a server batches as requests come)
        chunks = step_episodes(model, [states[e] for e in active], [episodes[e][r - e] for e in active])
        for e, chunk in zip(active, chunks):
            batched[e].append(chunk)
    return alone, batched


def _max_diff(a: list[list[torch.Tensor]], b: list[list[torch.Tensor]]) -> float:
    return max((x.float() - y.float()).abs().max().item() for ea, eb in zip(a, b) for x, y in zip(ea, eb))


@pytest.mark.parametrize("name,head,history", CASES)
def test_batched_steps_equal_stepping_each_episode_alone(tiny_dir, name, head, history):
    model = build_model(tiny_dir, name, head=head, history=history, gripper=True, proprio=True,
                        chunk=chunk_for(head, history)).eval()
    alone, batched = _staggered(model, _episodes(gripper=True))
    assert [len(c) for c in batched] == [STEPS] * EPISODES
    assert _max_diff(alone, batched) <= 1e-4


@pytest.mark.parametrize("name,head", [("tiny_idefics3", "lstm"), ("tiny_llava", "gpt")])
def test_batched_steps_in_bf16_stay_within_two_bf16_steps(tiny_dir, name, head):
    """bf16 weights: batched and alone differ by at most one bf16 step of the outputs (measured: 9.8e-4 with
    the LSTM head, 0 with the GPT head, whose tanh outputs round the difference away); bounded at two
    steps near 1 (2 * 2**-8)."""
    model = build_model(tiny_dir, name, head=head, gripper=True, proprio=True).eval().to(torch.bfloat16)
    alone, batched = _staggered(model, _episodes(gripper=True))
    assert _max_diff(alone, batched) <= 2 * 2**-8


def test_the_backbone_runs_once_per_batch_on_the_new_frames(tiny_dir):
    model = build_model(tiny_dir, "tiny_llava", head="lstm").eval()
    calls = []
    model.vlm.model.register_forward_hook(lambda m, args, kwargs, out: calls.append(tuple(kwargs["input_ids"].shape)),
                                          with_kwargs=True)
    episodes = _episodes(gripper=False)
    states = [new_episode(model) for _ in episodes]
    for t in range(STEPS):
        step_episodes(model, states, [frames[t] for frames in episodes])
    lengths = {len(model.backbone.prompt_ids(model.prompt(i), ((200, 200),))) for i in INSTRUCTIONS[:EPISODES]}
    assert len(lengths) > 1  # the prompts differ in length: one padded run, not one per length
    assert calls == [(EPISODES, max(lengths) + 1)] * STEPS  # + [LRN]


@pytest.mark.parametrize("execution", ["replan", "chunk", "ensemble"])
def test_a_policy_steps_sessions_as_agents_step_alone(tiny_dir, execution):
    """VLAPolicy.step_batch over sessions (the execution strategies' state per session) == one VLAAgent
    per session; a session reset between subtasks starts afresh."""
    model = build_model(tiny_dir, "tiny_llava", head="lstm", gripper=True, proprio=True)
    cfg = dict(execution=execution, exec_horizon=2)
    policy = VLAPolicy(model, ActionNormalizer(), ExecutionConfig(**cfg))
    agents = [VLAAgent(model, ActionNormalizer(), ExecutionConfig(**cfg)) for _ in range(3)]
    sessions = [policy.new_session() for _ in agents]
    rng = np.random.default_rng(0)
    for t in range(6):
        if t == 3:  # a new subtask in session 1
            policy.reset(sessions[1])
            agents[1].reset()
        obs = [_obs(rng) for _ in agents]
        instructions = [INSTRUCTIONS[i] for i in range(len(agents))]
        together = policy.step_batch(sessions, obs, instructions)
        for agent, o, i, action in zip(agents, obs, instructions, together):
            np.testing.assert_allclose(action, agent.step(o, i), atol=1e-4)
            assert action.shape == (7,) and action.dtype == np.float64
        path = policy.planned_tcp_path(sessions[0])
        np.testing.assert_allclose(path, agents[0].planned_tcp_path(), atol=1e-4)


def _obs(rng) -> dict:
    return {"rgb_obs": {"rgb_static": rng.integers(0, 256, (200, 200, 3), dtype=np.uint8),
                        "rgb_gripper": rng.integers(0, 256, (84, 84, 3), dtype=np.uint8)},
            "robot_obs": np.concatenate([[0.1, -0.2, 0.5], rng.normal(size=12)])}


@pytest.mark.parametrize("history", ["post", "interleaved"])
def test_a_batch_the_model_refuses_is_stepped_request_by_request(tiny_dir, history):
    """The policy server's batcher with a real policy: one session's observation the model refuses (8
    robot_obs values) fails that request only; the batch is stepped again without it, and every session,
    the refused one too, goes on as if the refused observation had never come (its frame is taken back)."""
    from harness.serve.batching import Batcher, Request, ServerSession, ServerStats

    model = build_model(tiny_dir, "tiny_llava", head="lstm", history=history, gripper=True, proprio=True)
    policy = VLAPolicy(model, ActionNormalizer())
    batcher = Batcher(policy, max_batch=4, max_wait_ms=0, stats=ServerStats(), open_sessions=lambda: 3)
    sessions = [ServerSession(i, policy.new_session()) for i in range(3)]
    agents = [VLAAgent(model, ActionNormalizer()) for _ in sessions]
    rng = np.random.default_rng(0)
    try:
        for t in range(WINDOW + 2):
            obs = [_obs(rng) for _ in sessions]
            sent = [{**o, "robot_obs": o["robot_obs"][:8]} if (t == 2 and i == 1) else o for i, o in enumerate(obs)]
            results = batcher._step([Request(s, o, INSTRUCTIONS[i], 0.0, None) for i, (s, o) in enumerate(zip(sessions, sent))])
            if t == 2:
                assert not results[1][0] and "robot_obs must have 15 values" in str(results[1][1])
                results[1] = batcher._step([Request(sessions[1], obs[1], INSTRUCTIONS[1], 0.0, None)])[0]
            for i, (ok, action) in enumerate(results):
                assert ok, action
                np.testing.assert_allclose(action, agents[i].step(obs[i], INSTRUCTIONS[i]), atol=1e-4)
    finally:
        batcher.close()


@pytest.mark.parametrize("history,cached", [("interleaved", True), ("post", False)])
def test_frames_the_model_refuses_leave_the_episodes_as_they_were(tiny_dir, history, cached):
    """step_episodes raising inside the model (a frame with 8 robot_obs values) takes the new frames back:
    stepping the good frames afterwards gives what it gives without the failed call (the window re-runs
    of these settings read the kept frames)."""
    model = build_model(tiny_dir, "tiny_llava", head="lstm", history=history, proprio=True).eval()
    episodes = _episodes(gripper=False)[:3]
    clean = [new_episode(model) for _ in episodes]
    tried = [new_episode(model) for _ in episodes]
    for t in range(STEPS):
        frames = [e[t] for e in episodes]
        if t in (2, WINDOW + 1):  # while the windows fill, and once they slide
            bad = [dict(f) for f in frames]
            bad[1]["robot_obs"] = bad[1]["robot_obs"][..., :8]
            with pytest.raises((ValueError, RuntimeError), match="15"):  # the proprio encoder, or stacking windows
                step_episodes(model, tried, bad, cached=cached)
        torch.testing.assert_close(step_episodes(model, tried, frames, cached=cached),
                                   step_episodes(model, clean, frames, cached=cached), atol=1e-6, rtol=0)


def test_a_head_that_fails_mid_batch_leaves_the_episodes_as_they_were(tiny_dir, monkeypatch):
    """The history head failing after it took the new features (e.g. out of memory in the LSTM on a big batch):
    its windows and caches go back, so stepping the same frames again (the server's one-by-one retry) gives
    what it gives without the failed call, while the windows fill and once they slide."""
    model = build_model(tiny_dir, "tiny_llava", head="lstm", history="post", proprio=True).eval()
    episodes = _episodes(gripper=False)[:3]
    clean, tried = [new_episode(model) for _ in episodes], [new_episode(model) for _ in episodes]
    advance = type(model.head)._advance
    for t in range(STEPS):
        frames = [e[t] for e in episodes]
        if t in (2, WINDOW + 1):
            def failing(self, steps):
                advance(self, steps)  # caches already replaced when it fails
                raise RuntimeError("out of memory")

            monkeypatch.setattr(type(model.head), "_advance", failing)
            with pytest.raises(RuntimeError, match="out of memory"):
                step_episodes(model, tried, frames)
            monkeypatch.setattr(type(model.head), "_advance", advance)
        torch.testing.assert_close(step_episodes(model, tried, frames), step_episodes(model, clean, frames),
                                   atol=1e-6, rtol=0)
