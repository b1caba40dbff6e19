"""Step-by-step inference over an episode: the cached path and the recompute-the-window baseline.

`EpisodeStream(model, cached=True).step(frame)` returns the normalised chunk (C, 7) predicted at the newest
frame, with exactly the history the model was trained on (the last `window_size` frames):

* cached, `history: post`: the backbone runs once, on the new frame only. The per-frame [LRN] features
  of earlier frames are kept by the head's incremental state (LSTM state, GPT KV cache; see `heads.py`).
  The discrete head decodes the new frame's chunk with the backbone's KV cache.
* cached, `history: interleaved`: while the window fills, each new frame's segment is appended to the
  backbone's KV cache (and its action tokens, for the discrete head). Once the window is full, dropping
  the oldest frame changes every later hidden state, so each step re-runs the window.
* not cached (baseline, what RoboVLMs does for the history heads): re-run the backbone over the whole
  window every step and keep the newest frame's prediction.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import torch

from .backbones import BackboneCache
from .model import PER_FRAME_INPUTS, Batch, VLAModel



class EpisodeStream:
    def __init__(self, model: VLAModel, cached: bool = True):
        self.model = model
        self.cached = cached
        self.reset()

    def reset(self) -> None:
        self.frames: deque[Batch] = deque(maxlen=self.model.cfg.window_size)
        self.head_state: Any = None if self.model.discrete else self.model.head.init_state()
        self.cache = BackboneCache()
        self.t = 0

    @torch.inference_mode()
    def step(self, frame: Batch) -> torch.Tensor:
        """`frame`: a window of one frame and one sample (tensors shaped (1, 1, ...), `instruction` [str])."""
        self.frames.append(frame)
        if not self.cached:
            chunk = self.model.predict(self._window())[0, -1]
        elif self.model.cfg.history == "post":
            chunk = self._post(frame)
        elif self.t < self.model.cfg.window_size:
            chunk = self._interleaved(frame)
        else:
            chunk = self.model.predict(self._window())[0, -1]
        self.t += 1
        return chunk

    def _window(self) -> Batch:
        first = self.frames[0]
        window = {k: v for k, v in first.items() if k not in PER_FRAME_INPUTS}
        for k in PER_FRAME_INPUTS:
            if k in first:
                window[k] = torch.cat([f[k] for f in self.frames], dim=1)
        return window

    def _post(self, frame: Batch) -> torch.Tensor:
        m = self.model
        if m.discrete:
            return _bins_to_chunk(m, m.decode_actions(frame))
        feat = m.features(frame)[:, 0]
        arm, grip, self.head_state = m.head.step(feat, self.head_state)
        return _chunk(arm, grip)

    def _interleaved(self, frame: Batch) -> torch.Tensor:
        m = self.model
        continuing = self.t > 0
        if m.discrete:
            return _bins_to_chunk(m, m.decode_actions(frame, self.cache, continuing=continuing))
        feat = m.features(frame, cache=self.cache, continuing=continuing)[:, 0]
        arm, grip, self.head_state = m.head.step(feat, self.head_state)
        return _chunk(arm, grip)


def _chunk(arm: torch.Tensor, grip_logits: torch.Tensor) -> torch.Tensor:
    return torch.cat([arm[0], torch.sigmoid(grip_logits[0]).unsqueeze(-1)], dim=-1).float()


def _bins_to_chunk(model: VLAModel, bins: torch.Tensor) -> torch.Tensor:
    return model.bins.decode(bins[0].view(model.cfg.chunk_size, -1)).float()
