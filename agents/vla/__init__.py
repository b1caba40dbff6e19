"""The VLA model: any transformers VLM + a learnable [LRN] action token + a policy head, and its agent.

    config.py      dataclass configs (VLAConfig, BackboneConfig, HeadConfig, LossConfig, FinetuneConfig)
    backbones.py   one adapter per family (llava, paligemma, idefics3, smolvlm, qwen2_vl, kosmos2, mllama, scratch)
    scratch.py     the non-VLM baseline: CNN + word embeddings + GRU, a transformers model of this project
    tokens.py      [LRN] / [PROPRIO] / action tokens, their embedding table, action binning
    tiny.py        tiny random-init backbones and the offline tokenizer
    heads.py       mlp / lstm / gpt / discrete heads and the losses
    model.py       VLAModel: forward(batch) -> losses, predict(batch) -> chunks
    finetune.py    LoRA, freezing, last-k layers, gradient checkpointing, parameter report
    inference.py   step_episodes / EpisodeStream: cached step-by-step inference of one or many episodes
    checkpoint.py  save_checkpoint / load_checkpoint (safetensors, validated)
    agent.py       VLAPolicy (many sessions stepped together), VLAAgent (one session), load_policy, load_agent

Names are exported lazily: importing this package does not import torch.
"""

from importlib import import_module
from typing import Any

_EXPORTS = {
    "VLAConfig": "config", "BackboneConfig": "config", "HeadConfig": "config", "LossConfig": "config",
    "FinetuneConfig": "config", "VLAModel": "model", "save_checkpoint": "checkpoint",
    "load_checkpoint": "checkpoint", "VLAAgent": "agent", "ExecutionConfig": "agent", "load_agent": "agent",
    "VLAPolicy": "agent", "load_policy": "agent",
    "EpisodeStream": "inference", "build_tiny": "tiny",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'agents.vla' has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)


__all__ = sorted(_EXPORTS)
