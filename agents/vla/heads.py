"""Policy heads over the per-frame [LRN] features, and their losses.

Continuous heads map features (B, W, H) to, for every frame, a chunk of C = chunk_size actions:
6 arm values through tanh (normalised space) and one gripper logit each. They also run incrementally
(`init_state` / `step_batch`), one new frame per episode at a time, with the same result as `forward` over
the window. `step_batch` advances any number of episodes in one call, each with its own state and at its
own point of its window (a policy server steps many clients' episodes together):

* `mlp`  - no history: each frame on its own.
* `lstm` - keeps (h, c) while the window fills; once the window is full and slides, it re-runs over the
  last W cached features from a zero state (exactly what it was trained on; the LSTM is cheap). Episodes
  at different points go through one packed LSTM call (one step from their (h, c), or W from zero).
* `gpt`  - causal transformer with learned positions 0..W-1 and a KV cache while the window fills; once
  the window slides, positions shift, so it re-runs over the last W cached features. Episodes at
  different points go through one call: caches padded to the longest, an attention mask per episode.

The discrete head reuses the language model: its action tokens are scored by `DiscreteHead.logits`, and
decoding lives in `VLAModel` (it needs the backbone).
"""

from __future__ import annotations

import warnings
from collections import deque
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_sequence

from .config import HeadConfig, LossConfig

ARM_DIM = 6  # CALVIN relative action: xyz + euler; the 7th value is the gripper


def _mlp(d_in: int, d_hidden: int, d_out: int, n_layers: int = 2, dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    d = d_in
    for _ in range(n_layers - 1):
        layers += [nn.Linear(d, d_hidden), nn.GELU(), nn.Dropout(dropout)]
        d = d_hidden
    layers.append(nn.Linear(d, d_out))
    return nn.Sequential(*layers)


class ChunkDecoder(nn.Module):
    """Feature -> (arm (..., C, 6) in [-1, 1], gripper logits (..., C))."""

    def __init__(self, d_in: int, d_hidden: int, chunk: int, dropout: float = 0.0):
        super().__init__()
        self.chunk = chunk
        self.arm = _mlp(d_in, d_hidden, chunk * ARM_DIM, 2, dropout)
        self.gripper = _mlp(d_in, d_hidden, chunk, 2, dropout)

    def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        arm = torch.tanh(self.arm(h)).unflatten(-1, (self.chunk, ARM_DIM))
        return arm, self.gripper(h)


class ContinuousHead(nn.Module):
    """Interface: `forward(feats (B, W, H))` and `init_state()` / `step_batch(feats (B, H), states)`."""

    def __init__(self, cfg: HeadConfig, d_in: int, chunk: int, window: int):
        super().__init__()
        self.cfg, self.window = cfg, window
        self.decoder = ChunkDecoder(cfg.hidden_size, cfg.hidden_size, chunk, cfg.dropout)

    def init_state(self) -> Any:
        return None

    def step_batch(self, feats: torch.Tensor, states: list[Any]) -> tuple[torch.Tensor, torch.Tensor, list[Any]]:
        """One new frame's feature per episode (B, H) and the episodes' states -> arm (B, C, 6), gripper
        logits (B, C) at the new frames, and the advanced states."""
        raise NotImplementedError


class MLPHead(ContinuousHead):
    def __init__(self, cfg, d_in, chunk, window):
        super().__init__(cfg, d_in, chunk, window)
        self.trunk = nn.Sequential(_mlp(d_in, cfg.hidden_size, cfg.hidden_size, max(cfg.num_layers, 1), cfg.dropout), nn.GELU())

    def forward(self, feats):
        return self.decoder(self.trunk(feats))

    def step_batch(self, feats, states):
        arm, grip = self.forward(feats)
        return arm, grip, states


@dataclass
class WindowState:
    """Incremental state of a history head: the features in the window, plus the head's own cache."""

    feats: deque = field(default_factory=deque)
    cache: Any = None


@dataclass
class HistoryStep:
    """What one episode feeds a history head this step: the new frame alone from its cache while its window
    fills (`past` = the frames before it), or its whole window from scratch once the window slides."""

    inputs: torch.Tensor  # (L, H): the new feature (L = 1), or the window's features (L = W)
    past: int  # positions before `inputs` held in the episode's cache (0 when re-running the window)
    state: WindowState


class HistoryHead(ContinuousHead):
    """A head over the window's features. Incrementally, an episode whose window is filling adds its new
    frame through its cache; once the window is full and slides, it runs over the last W frames, as in
    training. `_advance` runs the whole batch of episodes, both kinds mixed, in one call."""

    def init_state(self):
        return WindowState()

    def step_batch(self, feats, states):
        saved = [(deque(state.feats), state.cache) for state in states]
        try:
            steps = []
            for feat, state in zip(feats, states):
                if len(state.feats) < self.window:
                    steps.append(HistoryStep(feat.unsqueeze(0), len(state.feats), state))
                    state.feats.append(feat)
                else:
                    state.feats.popleft()
                    state.feats.append(feat)
                    steps.append(HistoryStep(torch.stack(list(state.feats)), 0, state))
            h = self._advance(steps)
            arm, grip = self.decoder(h)
        except BaseException:  # (an out-of-memory batch) no episode stepped: the server steps them again one by one
            for state, (window, cache) in zip(states, saved):
                state.feats, state.cache = window, cache
            raise
        return arm, grip, states

    def _advance(self, steps: list[HistoryStep]) -> torch.Tensor:
        """The last output (B, d) of every episode's inputs; updates each episode's cache."""
        raise NotImplementedError


@lru_cache(maxsize=None)
def cpu_runs_bf16_lstm() -> bool:
    """Whether this CPU runs an LSTM under bfloat16 autocast, forward and backward. oneDNN builds a bf16
    LSTM only on CPUs with AVX-512 (or AMX); on AVX2-only CPUs it cannot create the primitive. Asked once
    per process, and said once when the answer is no."""
    try:
        with torch.inference_mode(False), torch.enable_grad():  # whatever mode the caller runs in
            lstm = nn.LSTM(8, 8, batch_first=True)
            with torch.autocast("cpu", dtype=torch.bfloat16):
                out, _ = lstm(torch.zeros(1, 2, 8, requires_grad=True))
            out.float().sum().backward()
        return True
    except RuntimeError:
        warnings.warn("this CPU has no bfloat16 LSTM (oneDNN needs AVX-512 for it): the LSTM head runs in float32 "
                      "under bf16 autocast; the rest of the model stays in bf16", stacklevel=2)
        return False


class LSTMHead(HistoryHead):
    def __init__(self, cfg, d_in, chunk, window):
        super().__init__(cfg, d_in, chunk, window)
        self.lstm = nn.LSTM(d_in, cfg.hidden_size, num_layers=cfg.num_layers, batch_first=True,
                            dropout=cfg.dropout if cfg.num_layers > 1 else 0.0)

    def _lstm(self, feats: Any, hc: Any = None) -> tuple[Any, Any]:
        """The LSTM (on a tensor or a PackedSequence), in float32 where CPU bf16 autocast asks for a bf16
        LSTM that this CPU lacks."""
        data = feats.data if isinstance(feats, nn.utils.rnn.PackedSequence) else feats
        if (data.device.type == "cpu" and torch.is_autocast_enabled("cpu")
                and torch.get_autocast_dtype("cpu") == torch.bfloat16 and not cpu_runs_bf16_lstm()):
            with torch.autocast("cpu", enabled=False):
                hc = None if hc is None else tuple(t.float() for t in hc)
                feats = feats._replace(data=data.float()) if data is not feats else feats.float()
                return self.lstm(feats, hc)
        return self.lstm(feats, hc)

    def forward(self, feats):
        out, _ = self._lstm(feats)
        return self.decoder(out)

    def _advance(self, steps):
        """One LSTM call for the batch: a filling window's new frame from its (h, c), a sliding window's
        W frames from a zero state. Sequences of different lengths go in packed."""
        first = steps[0].inputs
        caches = [s.state.cache for s in steps if s.past]
        dtype = caches[0][0].dtype if caches else first.dtype
        zeros = torch.zeros((self.lstm.num_layers, 1, self.lstm.hidden_size), dtype=dtype, device=first.device)
        hcs = [s.state.cache if s.past else (zeros, zeros) for s in steps]
        h0, c0 = (torch.cat([hc[k].to(dtype) for hc in hcs], dim=1) for k in (0, 1))
        lengths = {len(s.inputs) for s in steps}
        if len(lengths) == 1:  # one length (always so for a single episode): no packing
            _, (h, c) = self._lstm(torch.stack([s.inputs for s in steps]), (h0, c0))
        else:
            _, (h, c) = self._lstm(pack_sequence([s.inputs for s in steps], enforce_sorted=False), (h0, c0))
        for i, s in enumerate(steps):
            s.state.cache = (h[:, i : i + 1], c[:, i : i + 1])
        return h[-1]  # the last layer's state after each sequence's own last step = its last output


class _CausalBlock(nn.Module):
    def __init__(self, d: int, n_heads: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.mlp = nn.Sequential(nn.Linear(d, 4 * d), nn.GELU(), nn.Linear(4 * d, d), nn.Dropout(dropout))
        self.dropout = dropout

    def forward(self, x: torch.Tensor, past: tuple[torch.Tensor, torch.Tensor] | None = None,
                mask: torch.Tensor | None = None):
        """`mask` (B, 1, T, past + T), True where a query may attend, replaces the causal rule (batches of
        episodes whose caches were padded to one length)."""
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
        # with a cache the new queries are the last positions and may see every cached key
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=mask is None and past is None and t > 1,
                                             dropout_p=self.dropout if self.training else 0.0)
        x = x + self.proj(att.transpose(1, 2).reshape(b, t, d))
        return x + self.mlp(self.ln2(x)), (k, v)


class GPTHead(HistoryHead):
    def __init__(self, cfg, d_in, chunk, window):
        super().__init__(cfg, d_in, chunk, window)
        d = cfg.hidden_size
        self.inp = nn.Linear(d_in, d)
        self.pos = nn.Embedding(window, d)
        self.blocks = nn.ModuleList(_CausalBlock(d, cfg.num_heads, cfg.dropout) for _ in range(cfg.num_layers))
        self.ln_f = nn.LayerNorm(d)

    def _run(self, feats: torch.Tensor, positions: torch.Tensor, past: list | None,
             mask: torch.Tensor | None = None) -> tuple[torch.Tensor, list]:
        if int(positions.max()) >= self.window:
            raise ValueError(f"GPT head: position {int(positions.max())} exceeds window_size {self.window}")
        x = self.inp(feats) + self.pos(positions)
        cache = []
        for i, block in enumerate(self.blocks):
            x, kv = block(x, None if past is None else past[i], mask)
            cache.append(kv)
        return self.ln_f(x), cache

    def forward(self, feats):
        h, _ = self._run(feats, torch.arange(feats.shape[1], device=feats.device), None)
        return self.decoder(h)

    def _advance(self, steps):
        if len({(len(s.inputs), s.past) for s in steps}) == 1:  # all alike (always so for one episode)
            return self._advance_alike(steps)
        return self._advance_mixed(steps)

    def _advance_alike(self, steps: list[HistoryStep]) -> torch.Tensor:
        """Episodes at one point of their windows: stacked caches, the causal rule."""
        x = torch.stack([s.inputs for s in steps])
        past_len = steps[0].past
        past = None
        if past_len:
            past = [tuple(torch.cat([s.state.cache[i][j] for s in steps]) for j in (0, 1)) for i in range(len(self.blocks))]
        h, cache = self._run(x, torch.arange(past_len, past_len + x.shape[1], device=x.device), past)
        for b, s in enumerate(steps):
            s.state.cache = [(k[b : b + 1], v[b : b + 1]) for k, v in cache]
        return h[:, -1]

    def _advance_mixed(self, steps: list[HistoryStep]) -> torch.Tensor:
        """Episodes at different points: inputs right-padded to the longest, caches to the longest, and a
        mask per episode: its own cached positions, then its new positions causally. Padding sits after
        every real position, so no real query sees it."""
        first = steps[0].inputs
        n, t, p = len(steps), max(len(s.inputs) for s in steps), max(s.past for s in steps)
        x = first.new_zeros(n, t, first.shape[-1])
        positions = torch.zeros(n, t, dtype=torch.long, device=first.device)
        mask = torch.zeros(n, 1, t, p + t, dtype=torch.bool, device=first.device)
        mask[..., p:] = torch.ones(t, t, dtype=torch.bool, device=first.device).tril()
        for b, s in enumerate(steps):
            x[b, : len(s.inputs)] = s.inputs
            positions[b, : len(s.inputs)] = torch.arange(s.past, s.past + len(s.inputs), device=first.device)
            mask[b, ..., : s.past] = True
        past = None if p == 0 else [tuple(self._padded([s.state.cache[i][j] if s.past else None for s in steps], p)
                                          for j in (0, 1)) for i in range(len(self.blocks))]
        h, cache = self._run(x, positions, past, mask)
        for b, s in enumerate(steps):  # each episode keeps its own positions only
            keep = torch.cat([torch.arange(s.past), torch.arange(p, p + len(s.inputs))]).to(first.device)
            s.state.cache = [(k[b : b + 1, :, keep], v[b : b + 1, :, keep]) for k, v in cache]
        return h[torch.arange(n), torch.tensor([len(s.inputs) - 1 for s in steps], device=h.device)]

    def _padded(self, caches: list[torch.Tensor | None], length: int) -> torch.Tensor:
        """Per-episode (1, heads, P_i, d) keys or values (None: no cache) -> (B, heads, length, d)."""
        like = next(c for c in caches if c is not None)
        out = like.new_zeros(len(caches), like.shape[1], length, like.shape[3])
        for b, c in enumerate(caches):
            if c is not None:
                out[b, :, : c.shape[2]] = c[0]
        return out


class DiscreteHead(nn.Module):
    """Output embeddings of the action tokens: the LM's hidden state scores the n_bins action tokens.

    The softmax runs over the action tokens only (constrained decoding): a decoded token is always a
    valid bin, and the loss does not spend capacity on the rest of the vocabulary.
    """

    def __init__(self, cfg: HeadConfig, d_in: int, init_std: float = 0.02):
        super().__init__()
        self.n_bins = cfg.n_bins
        self.out = nn.Parameter(torch.randn(cfg.n_bins, d_in) * init_std)
        self.bias = nn.Parameter(torch.zeros(cfg.n_bins))

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden @ self.out.to(hidden.dtype).T + self.bias.to(hidden.dtype)


HEADS = {"mlp": MLPHead, "lstm": LSTMHead, "gpt": GPTHead}


def build_head(cfg: HeadConfig, d_in: int, chunk: int, window: int) -> nn.Module:
    if cfg.type == "discrete":
        return DiscreteHead(cfg, d_in)
    return HEADS[cfg.type](cfg, d_in, chunk, window)


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    mask = mask.to(x.dtype)
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


# The scene-state loss's targets: scene_obs entries and their scales (so that each is of order 1): the door,
# drawer, button and switch joints (m, x10), the lightbulb and LED (0/1), the red, blue and pink blocks' xyz (m, x10;
# the training data gives the blocks in that order in every scene: harness.data.windows.WindowSpec.scene_state).
SCENE_STATE = np.r_[0:6, 6:9, 12:15, 18:21]
SCENE_STATE_SCALE = np.r_[[10.0] * 4, [1.0] * 2, [10.0] * 9].astype(np.float32)
# What the targets are, by part of the scene: (name, its columns of the 15)
SCENE_STATE_PARTS = (("sliding door", slice(0, 1)), ("drawer", slice(1, 2)), ("button", slice(2, 3)),
                     ("switch", slice(3, 4)), ("lightbulb", slice(4, 5)), ("LED", slice(5, 6)),
                     ("red block", slice(6, 9)), ("blue block", slice(9, 12)), ("pink block", slice(12, 15)))


def scene_state_loss(predicted: torch.Tensor, scene_obs: torch.Tensor) -> torch.Tensor:
    """Smooth-L1 (beta 1) of the probe's (B, W, 15) prediction against the frames' scaled scene state."""
    scale = torch.as_tensor(SCENE_STATE_SCALE, device=scene_obs.device)
    target = scene_obs.float()[..., torch.as_tensor(SCENE_STATE, device=scene_obs.device)] * scale
    return F.smooth_l1_loss(predicted.float(), target)


def gripper_step_weights(target_open: torch.Tensor, last_command: torch.Tensor | None, cfg: LossConfig) -> torch.Tensor:
    """(..., C) weight of each chunk step's gripper loss: `gripper_switch_weight` where the target (open: True)
    differs from the frame's last gripper command (robot_obs[14], (...), +1 open / -1 close), else 1."""
    if cfg.gripper_switch_weight == 1:
        return torch.ones_like(target_open, dtype=torch.float32)
    if last_command is None:
        raise ValueError("loss.gripper_switch_weight needs each frame's robot_obs (its last gripper command) in the batch")
    switched = target_open != (last_command > 0).unsqueeze(-1)
    return 1.0 + (cfg.gripper_switch_weight - 1.0) * switched.float()


# loss.gripper_weight when it is null, per kind of head (agents.vla.config.LossConfig)
GRIPPER_WEIGHTS = {"continuous": 0.01, "discrete": 1 / 6}


def gripper_weight(cfg: LossConfig, kind: str) -> float:
    return GRIPPER_WEIGHTS[kind] if cfg.gripper_weight is None else cfg.gripper_weight


def continuous_loss(arm: torch.Tensor, grip_logits: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor,
                    cfg: LossConfig, last_command: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Smooth-L1 on the arm + weighted BCE on the gripper, both averaged over unmasked (frame, step)s; the
    gripper's steps weighted by `gripper_step_weights` (the mean still divides by the unweighted count)."""
    arm, grip_logits = arm.float(), grip_logits.float()
    loss_arm = _masked_mean(F.smooth_l1_loss(arm, actions[..., :ARM_DIM], beta=cfg.smooth_l1_beta, reduction="none").mean(-1), mask)
    target = actions[..., ARM_DIM]
    weights = gripper_step_weights(target > 0.5, last_command, cfg)
    loss_grip = _masked_mean(weights * F.binary_cross_entropy_with_logits(grip_logits, target, reduction="none"), mask)
    acc = _masked_mean(((grip_logits > 0) == (target > 0.5)).float(), mask)
    return {
        "loss": cfg.arm_weight * loss_arm + gripper_weight(cfg, "continuous") * loss_grip,
        "loss_arm": loss_arm, "loss_gripper": loss_grip, "acc_gripper": acc.detach(),
        "loss_state": torch.zeros((), device=loss_arm.device),
    }


def discrete_loss(logits: torch.Tensor, bins: torch.Tensor, mask: torch.Tensor, cfg: LossConfig,
                  last_command: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Cross-entropy over action tokens. logits (..., C, 7, n_bins), bins (..., C, 7), mask (..., C); the
    gripper's steps weighted as in `continuous_loss`."""
    ce = F.cross_entropy(logits.float().flatten(0, -2), bins.flatten(), reduction="none").view(bins.shape)
    loss_arm = _masked_mean(ce[..., :ARM_DIM].mean(-1), mask)
    n = logits.shape[-1]
    weights = gripper_step_weights(bins[..., ARM_DIM] >= n // 2, last_command, cfg)
    loss_grip = _masked_mean(weights * ce[..., ARM_DIM], mask)
    acc = _masked_mean(((logits[..., ARM_DIM, :].argmax(-1) >= n // 2) == (bins[..., ARM_DIM] >= n // 2)).float(), mask)
    return {
        "loss": cfg.arm_weight * loss_arm + gripper_weight(cfg, "discrete") * loss_grip,
        "loss_arm": loss_arm, "loss_gripper": loss_grip, "acc_gripper": acc.detach(),
        "loss_state": torch.zeros((), device=loss_arm.device),
    }
