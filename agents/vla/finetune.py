"""What trains: full fine-tuning, LoRA (peft), frozen parts, last-k decoder layers, gradient checkpointing,
and the per-part trainable-parameter report.

The VLA's own parts (the added token rows incl. [LRN], the proprio encoder, the instruction FiLM and the head)
always train.
An untied LM head is frozen unless `train_lm_head` is set: the action losses never reach it, and an
unused trainable parameter breaks DDP.

The functions take a VLA model (`agents.vla.model.VLAModel`, whose `build` calls `apply_finetune`) and read
its parts by name: `backbone` (the adapter), `vlm`, `embed`, `head`, `proprio`, `film`.
"""

from __future__ import annotations

from torch import nn

from .config import FinetuneConfig


def _set(module: nn.Module | None, trainable: bool) -> None:
    if module is not None:
        for p in module.parameters():
            p.requires_grad_(trainable)


def lora_target_modules(language_model: nn.Module) -> list[str]:
    """Names (relative to the language model) of every nn.Linear in it: LoRA goes on all of them."""
    return [name for name, m in language_model.named_modules() if isinstance(m, nn.Linear)]


def apply_finetune(model: nn.Module, cfg: FinetuneConfig) -> None:
    """Set `requires_grad` (and inject LoRA, enable checkpointing) on `model` as `cfg` says."""
    bb = model.backbone
    lm = bb.language_model
    _set(model, True)
    if cfg.mode == "frozen":
        _set(model.vlm, False)
    elif cfg.mode == "lora":
        from peft import LoraConfig, inject_adapter_in_model
        from peft.functional import cast_adapter_dtype

        _set(model.vlm, False)
        lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout,
                          bias=cfg.lora_bias, target_modules=lora_target_modules(lm))
        inject_adapter_in_model(lora, lm)  # in place: the LM's Linears become LoRA layers, base weights frozen
        # the adapters take the base layers' dtype: on a bf16 backbone (the LoRA presets) lora_A's updates at a
        # fine-tuning learning rate round away. In fp32, as get_peft_model keeps them; the base stays bf16
        cast_adapter_dtype(lm, "default", autocast_adapter_dtype=True)
        for m in bb.vision_modules:
            _set(m, cfg.train_vision)
        _set(model.embed.base, cfg.train_embeddings)
    else:
        for m in bb.vision_modules:
            _set(m, cfg.train_vision)
        if cfg.train_decoder_layers >= 0:
            _set(lm, False)
            layers = bb.decoder_layers
            for layer in list(layers)[len(layers) - cfg.train_decoder_layers:] if cfg.train_decoder_layers else []:
                _set(layer, True)
            _set(bb.final_norm, cfg.train_decoder_layers > 0)  # final norm trains with the top layers
        _set(model.embed.base, cfg.train_embeddings)
    head = bb.lm_head
    if head is not None and head.weight is not model.embed.base.weight:
        _set(head, cfg.train_lm_head)
    model.embed.added.requires_grad_(True)
    _set(model.head, True)
    _set(model.proprio, True)
    _set(model.film, True)
    if cfg.gradient_checkpointing:
        # transformers' own mechanism: every decoder/vision layer re-computes its forward in backward
        # (renamed activation_checkpointing_enable in transformers 5; the old name is deprecated there)
        kwargs = {"use_reentrant": False}
        if hasattr(model.vlm, "activation_checkpointing_enable"):
            model.vlm.activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
        else:
            model.vlm.gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def freeze_unreached(model: nn.Module, batch: dict) -> list[str]:
    """Freeze the trainable parameters that the loss of `batch` does not reach; return their names.

    Some backbone parts never feed the [LRN] feature (e.g. LLaVA reads the vision tower's hidden states, so
    CLIP's `post_layernorm` is unused). DDP requires every trainable parameter to get a gradient: call this
    once before wrapping, or run DDP with `find_unused_parameters=True`."""
    saved = {n: p.grad for n, p in model.named_parameters()}
    for p in model.parameters():
        p.grad = None
    model(batch)["loss"].backward()
    unreached = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    for n, p in model.named_parameters():
        p.grad = saved[n]
        if n in unreached:
            p.requires_grad_(False)
    return unreached


def parameter_report(model: nn.Module) -> list[tuple[str, int, int]]:
    """(part, trainable, total) per part; tied weights are counted once, in the first part listed."""
    bb = model.backbone
    head = bb.lm_head
    parts: list[tuple[str, list[nn.Parameter]]] = [
        ("lora adapters", [p for n, p in model.vlm.named_parameters() if "lora_" in n]),
        ("added tokens ([LRN], ...)", [model.embed.added]),
        ("word embeddings", list(model.embed.base.parameters())),
        ("vision tower + projector", [p for m in bb.vision_modules for p in m.parameters()]),
        ("language model", list(bb.language_model.parameters())),
        ("lm head", list(head.parameters()) if head is not None else []),
        ("proprio encoder", list(model.proprio.parameters()) if model.proprio is not None else []),
        ("instruction FiLM", list(model.film.parameters()) if model.film is not None else []),
        ("policy head", list(model.head.parameters())),
        ("scene-state probe (training only)", list(model.state_probe.parameters()) if model.state_probe is not None else []),
        ("other backbone", list(model.vlm.parameters())),
    ]
    seen: set[int] = set()
    rows = []
    for name, params in parts:
        fresh = [p for p in params if id(p) not in seen]
        seen.update(id(p) for p in fresh)
        if fresh:
            rows.append((name, sum(p.numel() for p in fresh if p.requires_grad), sum(p.numel() for p in fresh)))
    return rows


def format_parameter_report(rows: list[tuple[str, int, int]]) -> str:
    width = max(28, *(len(name) + 2 for name, _, _ in rows))
    lines = [f"{'part':<{width}}{'trainable':>14}{'total':>14}"]
    lines += [f"{name:<{width}}{t:>14,}{n:>14,}" for name, t, n in rows]
    t_all, n_all = sum(r[1] for r in rows), sum(r[2] for r in rows)
    lines.append(f"{'all':<{width}}{t_all:>14,}{n_all:>14,}  ({100 * t_all / max(n_all, 1):.2f}% trainable)")
    return "\n".join(lines)
