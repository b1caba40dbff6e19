"""The batcher answers every request it takes: a policy that returns too few actions, or fails outright, fails
only the requests of that batch, with the reason, and the server goes on stepping the next ones."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from harness.serve.batching import Batcher, ServerSession, ServerStats


class DroppingPolicy:
    """Steps every observation (counting a session's steps in its state, a dict), but leaves out the action of
    any whose instruction is "drop"."""

    def step_batch(self, sessions: list[Any], observations: list[Any], instructions: list[str]) -> list[np.ndarray]:
        for state in sessions:
            if state is not None:
                state["steps"] += 1
        return [np.full(7, i, dtype=np.float32) for i, text in enumerate(instructions) if text != "drop"]


def test_a_policy_that_returns_too_few_actions_fails_that_batch_and_the_server_goes_on():
    sessions = [ServerSession(i, {"steps": 0}) for i in range(3)]

    async def run() -> list[Any]:
        stats = ServerStats()
        batcher = Batcher(DroppingPolicy(), max_batch=4, max_wait_ms=200, stats=stats, open_sessions=lambda: 3)
        task = asyncio.create_task(batcher.run())
        try:
            steps = [batcher.step(s, {}, text) for s, text in zip(sessions, ["go", "drop", "go"])]
            first = await asyncio.wait_for(asyncio.gather(*steps, return_exceptions=True), 10)
            later = await asyncio.wait_for(batcher.step(sessions[0], {}, "go"), 10)
            return [*first, later, task.done()]
        finally:
            task.cancel()
            batcher.close()

    *first, later, batcher_stopped = asyncio.run(run())
    # the call stepped all three sessions and returned two actions: every request of the batch fails, none is
    # stepped again (one by one, each session would have moved two steps for one observation)
    for result in first:
        assert isinstance(result, RuntimeError)
        assert "the policy's step_batch returned 2 action(s) for 3 observation(s)" in str(result)
    assert [s.state["steps"] for s in sessions] == [2, 1, 1]  # session 0 stepped once more, later
    assert isinstance(later, np.ndarray) and not batcher_stopped


def test_a_failed_compute_call_fails_its_batch_and_the_next_one_is_stepped(monkeypatch):
    async def run() -> tuple[Any, Any]:
        batcher = Batcher(DroppingPolicy(), max_batch=1, max_wait_ms=0, stats=ServerStats(), open_sessions=lambda: 1)
        calls = []
        real_call = batcher.call

        async def failing_once(fn, *args):
            calls.append(fn)
            if len(calls) == 1:
                raise RuntimeError("cannot schedule new futures after shutdown")
            return await real_call(fn, *args)

        monkeypatch.setattr(batcher, "call", failing_once)
        task = asyncio.create_task(batcher.run())
        try:
            session = ServerSession(0, None)
            with pytest.raises(RuntimeError, match="cannot schedule new futures"):
                await asyncio.wait_for(batcher.step(session, {}, "go"), 10)
            return await asyncio.wait_for(batcher.step(session, {}, "go"), 10), task.done()
        finally:
            task.cancel()
            batcher.close()

    action, batcher_stopped = asyncio.run(run())
    assert isinstance(action, np.ndarray) and not batcher_stopped
