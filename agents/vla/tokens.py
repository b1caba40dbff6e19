"""The tokens this project adds to a VLM's vocabulary, their embeddings, and the action binning.

* `[LRN]`: the learnable action token. The backbone's last hidden state at it is the frame's feature.
* `[PROPRIO]`: placeholder for the proprioception token; its embedding is replaced per frame by the
  proprio encoder's output (like image placeholders are replaced by image features).
* `<act_000>` ... `<act_{n-1}>` (discrete head only): one token per action bin.

All of them are real tokenizer tokens (`tokenizer.add_special_tokens`, saved with the checkpoint). Their
input embeddings live in `AddedTokenEmbedding.added`, a small table beside the backbone's own embedding
matrix: it trains even when the backbone's word embeddings are frozen, costs no optimizer state for the
rest of the vocabulary, and never touches the pretrained rows.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
from torch import nn

LRN_TOKEN = "[LRN]"
PROPRIO_TOKEN = "[PROPRIO]"


def action_token_names(n_bins: int) -> list[str]:
    return [f"<act_{i:03d}>" for i in range(n_bins)]


def add_vla_tokens(tokenizer, n_action_bins: int = 0) -> dict[str, int | list[int]]:
    """Add [LRN], [PROPRIO] and `n_action_bins` action tokens (idempotent); return their ids."""
    names = [LRN_TOKEN, PROPRIO_TOKEN] + action_token_names(n_action_bins)
    missing = [n for n in names if n not in tokenizer.get_vocab()]
    if missing:
        tokenizer.add_special_tokens({"extra_special_tokens": missing}, replace_extra_special_tokens=False)
    ids = tokenizer.convert_tokens_to_ids(names)
    return {"lrn": ids[0], "proprio": ids[1], "actions": ids[2:]}


class AddedTokenEmbedding(nn.Module):
    """A backbone's word embedding plus a trainable table for the added tokens.

    Replaces the backbone's input embedding (`set_input_embeddings`), so every family's own forward
    (which embeds `input_ids` itself) sees the added tokens. `inject(token_id, values)` overrides the
    embedding at every occurrence of `token_id` for the duration of one forward (the proprio token).
    """

    def __init__(self, base: nn.Embedding, added_ids: list[int]):
        super().__init__()
        self.base = base
        with torch.no_grad():  # start the new rows at the mean pretrained embedding (as seen after scaling)
            probe = base(torch.arange(min(base.num_embeddings, 4096), device=base.weight.device))
        mean, std = probe.float().mean(0), probe.float().std()
        noise = torch.randn(len(added_ids), mean.numel(), device=mean.device)
        self.added = nn.Parameter(mean.repeat(len(added_ids), 1) + 0.02 * std * noise)
        size = max(base.num_embeddings, max(added_ids) + 1)
        index = torch.full((size,), -1, dtype=torch.long, device=base.weight.device)
        index[torch.tensor(added_ids)] = torch.arange(len(added_ids), device=index.device)
        self.register_buffer("slot", index, persistent=False)
        self._injected: tuple[int, torch.Tensor] | None = None

    @property
    def weight(self) -> torch.Tensor:  # HF code (weight tying, resizing checks) reads `.weight`
        return self.base.weight

    @property
    def num_embeddings(self) -> int:
        return self.slot.numel()

    @property
    def embedding_dim(self) -> int:
        return self.added.shape[1]

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        slot = self.slot[input_ids]
        is_added = slot >= 0
        out = self.base(input_ids.masked_fill(is_added | (input_ids >= self.base.num_embeddings), 0))
        out = torch.where(is_added.unsqueeze(-1), self.added[slot.clamp(min=0)].to(out.dtype), out)
        if self._injected is not None:
            token_id, values = self._injected
            mask = (input_ids == token_id).unsqueeze(-1)
            if int(mask.sum()) != values.shape[0]:
                raise ValueError(f"{int(mask.sum())} injected-token positions but {values.shape[0]} values")
            out = out.masked_scatter(mask, values.to(out.dtype))
        return out

    @contextmanager
    def inject(self, token_id: int, values: torch.Tensor | None) -> Iterator[None]:
        """Within the block, occurrences of `token_id` (row-major) embed as `values` (N, H)."""
        if values is None:
            yield
            return
        self._injected = (token_id, values)
        try:
            yield
        finally:
            self._injected = None


class ActionBins:
    """Uniform bins over [-1, 1] for the normalised arm; the gripper {0, 1} uses the two extreme bins.

    Bin i covers [-1 + i w, -1 + (i + 1) w) with w = 2 / n; decoding returns the bin centre, so the round
    trip error is at most w / 2 (0.0039 for 256 bins).
    """

    def __init__(self, n_bins: int = 256):
        self.n = n_bins

    def encode(self, actions: torch.Tensor) -> torch.Tensor:
        """(..., D) normalised actions, last dim = gripper in {0, 1} -> (..., D) bin indices."""
        arm = ((actions[..., :-1].clamp(-1, 1) + 1) / 2 * self.n).long().clamp(0, self.n - 1)
        grip = torch.where(actions[..., -1:] > 0.5, self.n - 1, 0).long()
        return torch.cat([arm, grip], dim=-1)

    def decode(self, bins: torch.Tensor) -> torch.Tensor:
        """(..., D) bin indices -> (..., D) float: arm bin centres in [-1, 1], gripper 0/1."""
        arm = -1 + (bins[..., :-1].float() + 0.5) * (2 / self.n)
        grip = (bins[..., -1:] >= self.n // 2).float()
        return torch.cat([arm, grip], dim=-1)
