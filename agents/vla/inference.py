"""Step-by-step inference over episodes: the cached path, the recompute-the-window baseline, and batches of
episodes stepped together.

`step_episodes(model, states, frames)` takes one new frame for each of any number of episodes (each with
its own `EpisodeState`: its window of frames, its head state, its backbone cache) and returns the
normalised chunks (B, C, 7) predicted at the new frames, each with exactly the history the model was
trained on (the episode's last `window_size` frames):

* cached, `history: post`: the backbone runs once, on the new frames of all the episodes (one sequence
  per episode, right-padded where prompts differ in length). The per-frame [LRN] features of earlier
  frames are kept by each episode's head state (LSTM state, GPT KV cache; see `heads.py`), and the head
  advances every episode in one call. The discrete head decodes the new frames' chunks with the
  backbone's KV cache, one decoding per prompt length (a cached decoding runs unpadded).
* cached, `history: interleaved`: while the window fills, each new frame's segment is appended to the
  backbone's KV cache (and its action tokens, for the discrete head), for an episode stepped alone. Once
  the window is full, dropping the oldest frame changes every later hidden state, so each step re-runs the
  window; so does every episode of a batch (one backbone run over the windows of equal length), and an
  episode that went through a batch re-runs its window until it is full (its cache is left behind).
* not cached (baseline, what RoboVLMs does for the history heads): re-run the backbone over the whole
  window every step and keep the newest frame's prediction.

`EpisodeStream(model)` is one episode stepped alone (`step_episodes` with a batch of one).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable

import torch

from .backbones import BackboneCache
from .model import PER_FRAME_INPUTS, Batch, VLAModel


@dataclass
class EpisodeState:
    """One episode's incremental state."""

    frames: deque  # the last window_size frames (one-frame windows, tensors shaped (1, 1, ...))
    head_state: Any
    cache: BackboneCache = field(default_factory=BackboneCache)
    cached_frames: int = 0  # frames held in `cache` (interleaved); -1 once a batch left it behind
    t: int = 0  # frames seen


def new_episode(model: VLAModel) -> EpisodeState:
    return EpisodeState(deque(maxlen=model.cfg.window_size), None if model.discrete else model.head.init_state())


@torch.inference_mode()
def step_episodes(model: VLAModel, states: list[EpisodeState], frames: list[Batch], cached: bool = True) -> torch.Tensor:
    """`frames[i]`: episode i's new frame, a window of one frame and one sample (tensors (1, 1, ...),
    `instruction` [str]). Returns the chunks (B, C, 7) predicted at the new frames."""
    if len(states) != len(frames) or not states:
        raise ValueError(f"step_episodes: {len(states)} episode states for {len(frames)} frames")
    dropped = [s.frames[0] if len(s.frames) == s.frames.maxlen else None for s in states]
    for state, frame in zip(states, frames):
        state.frames.append(frame)
    try:
        chunks = _step(model, states, frames, cached)
    except BaseException:  # the model refused the frames: the episodes stay as they were (a server goes on)
        for state, old in zip(states, dropped):
            state.frames.pop()
            if old is not None:
                state.frames.appendleft(old)
        raise
    for state in states:
        state.t += 1
    return chunks


def _step(model: VLAModel, states: list[EpisodeState], frames: list[Batch], cached: bool) -> torch.Tensor:
    if not cached:
        return _rerun_windows(model, states)
    if model.cfg.history == "post":
        return _post(model, states, frames)
    if len(states) == 1 and states[0].t < model.cfg.window_size and states[0].cached_frames == states[0].t:
        return _interleaved(model, states[0], frames[0])
    for state in states:  # their backbone caches no longer follow the frames
        state.cached_frames = -1
    return _rerun_windows(model, states)


class EpisodeStream:
    """One episode stepped alone."""

    def __init__(self, model: VLAModel, cached: bool = True):
        self.model = model
        self.cached = cached
        self.reset()

    def reset(self) -> None:
        self.state = new_episode(self.model)

    def step(self, frame: Batch) -> torch.Tensor:
        """`frame`: a window of one frame and one sample. Returns the chunk (C, 7)."""
        return step_episodes(self.model, [self.state], [frame], self.cached)[0]


def stack_frames(frames: list[Batch]) -> Batch:
    """Samples (windows of equal length) -> one batch: tensors concatenated along the batch axis."""
    batch: Batch = {"instruction": [i for f in frames for i in f["instruction"]]}
    for key in PER_FRAME_INPUTS:
        if key in frames[0]:
            batch[key] = torch.cat([f[key] for f in frames], dim=0)
    return batch


def _window(state: EpisodeState) -> Batch:
    first = state.frames[0]
    window = {k: v for k, v in first.items() if k not in PER_FRAME_INPUTS}
    for k in PER_FRAME_INPUTS:
        if k in first:
            window[k] = torch.cat([f[k] for f in state.frames], dim=1)
    return window


def _grouped(samples: list[Batch], key: Callable[[Batch], Any], run: Callable[[Batch], torch.Tensor]) -> torch.Tensor:
    """`run` once per group of samples with equal `key` (the samples stacked), results back in order."""
    groups: dict[Any, list[int]] = {}
    for i, sample in enumerate(samples):
        groups.setdefault(key(sample), []).append(i)
    out: list[torch.Tensor | None] = [None] * len(samples)
    for idx in groups.values():
        for i, result in zip(idx, run(stack_frames([samples[i] for i in idx]))):
            out[i] = result
    return torch.stack(out)


def _shapes(sample: Batch) -> tuple:
    """What must agree for samples to share one batch: window length and image sizes."""
    return tuple(tuple(sample[k].shape[1:]) for k in PER_FRAME_INPUTS if k in sample)


def _rerun_windows(model: VLAModel, states: list[EpisodeState]) -> torch.Tensor:
    """The newest frame's chunk of every episode's whole window; one backbone run per window length."""
    return _grouped([_window(s) for s in states], _shapes, lambda batch: model.predict(batch)[:, -1])


def _post(model: VLAModel, states: list[EpisodeState], frames: list[Batch]) -> torch.Tensor:
    if model.discrete:
        return _grouped(frames, _shapes, lambda batch: model.predict(batch)[:, 0])
    feats = _grouped(frames, _shapes, lambda batch: model.features(batch)[:, 0])
    arm, grip, heads = model.head.step_batch(feats, [s.head_state for s in states])
    for state, head in zip(states, heads):
        state.head_state = head
    return _chunks(arm, grip)


def _interleaved(model: VLAModel, state: EpisodeState, frame: Batch) -> torch.Tensor:
    """One episode whose window is filling: its new frame's segment appended to its backbone cache."""
    continuing = state.t > 0
    done = state.cached_frames
    state.cached_frames = -1  # until the cache holds the new frame (a failure halfway leaves it unusable)
    if model.discrete:
        chunks = _bins_to_chunks(model, model.decode_actions(frame, state.cache, continuing=continuing))
    else:
        feat = model.features(frame, cache=state.cache, continuing=continuing)[:, 0]
        arm, grip, (state.head_state,) = model.head.step_batch(feat, [state.head_state])
        chunks = _chunks(arm, grip)
    state.cached_frames = done + 1
    return chunks


def _chunks(arm: torch.Tensor, grip_logits: torch.Tensor) -> torch.Tensor:
    return torch.cat([arm, torch.sigmoid(grip_logits).unsqueeze(-1)], dim=-1).float()


def _bins_to_chunks(model: VLAModel, bins: torch.Tensor) -> torch.Tensor:
    return model.bins.decode(bins.view(bins.shape[0], model.cfg.chunk_size, -1)).float()
