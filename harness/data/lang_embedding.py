"""Sentence embeddings for `language.emb` (CALVIN ships MiniLM embeddings, (N, 1, 384)).

Any transformers encoder (hub name or local folder; e.g. a sentence-transformers MiniLM checkout) is
mean-pooled over its tokens and L2-normalised, the way sentence-transformers' MiniLM models embed.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np


class SentenceEmbedder:
    def __init__(self, name_or_path: str, device: str = "cpu", batch_size: int = 64) -> None:
        from transformers import AutoModel, AutoTokenizer

        self.tokenizer = AutoTokenizer.from_pretrained(name_or_path, trust_remote_code=False)
        self.model = AutoModel.from_pretrained(name_or_path, trust_remote_code=False).to(device).eval()
        self.device = device
        self.batch_size = batch_size

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """(N, D) float32, unit norm."""
        import torch

        out = []
        with torch.no_grad():
            for i in range(0, len(texts), self.batch_size):
                batch = self.tokenizer(list(texts[i:i + self.batch_size]), padding=True, truncation=True, return_tensors="pt").to(self.device)
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                out.append(torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, int(self.model.config.hidden_size)), np.float32)
