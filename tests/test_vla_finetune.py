"""Fine-tuning modes: LoRA, frozen parts, last-k layers, gradient checkpointing, parameter report."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from agents.vla.finetune import format_parameter_report, freeze_unreached, parameter_report
from tests.vla_helpers import build_model, make_batch, tiny_dir  # noqa: F401  (fixture)


def _trainable(model) -> dict[str, torch.Tensor]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("name", ["tiny_llava", "tiny_kosmos2", "tiny_mllama"])
def test_lora_trains_only_adapters_and_vla_parts(tiny_dir, name):
    r = 4
    model = build_model(tiny_dir, name, head="lstm", proprio=True, mode="lora", lora_r=r, lora_alpha=8,
                        train_vision=False, train_embeddings=False)
    lm = model.backbone.language_model
    lora_linears = [m for m in lm.modules() if hasattr(m, "lora_A")]
    base_linears = [m.base_layer for m in lora_linears]
    assert lora_linears and not any(isinstance(m, nn.Linear) and not hasattr(m, "lora_A")
                                    for n, m in lm.named_modules() if "lora_" not in n and "base_layer" not in n)
    expected_lora = sum(r * (lin.in_features + lin.out_features) for lin in base_linears)
    vla_parts = sum(p.numel() for p in [*model.head.parameters(), *model.proprio.parameters(), model.embed.added])
    trainable = _trainable(model)
    assert sum(p.numel() for p in trainable.values()) == expected_lora + vla_parts
    assert all("lora_" in n or n.startswith(("head.", "proprio.")) or n.endswith("embed_tokens.added") for n in trainable)
    report = dict((name, t) for name, t, _ in parameter_report(model))
    assert report["lora adapters"] == expected_lora and report["language model"] == 0
    assert report["vision tower + projector"] == 0 and report["word embeddings"] == 0

    frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
    lora_b = {n: p.detach().clone() for n, p in trainable.items() if "lora_B" in n}
    opt = torch.optim.AdamW(trainable.values(), lr=1e-2)
    model(make_batch())["loss"].backward()
    opt.step()
    params = dict(model.named_parameters())
    assert all(torch.equal(params[n], v) for n, v in frozen.items())
    assert any(not torch.equal(params[n], v) for n, v in lora_b.items())


def test_lora_bias_and_rank_are_configurable(tiny_dir):
    model = build_model(tiny_dir, "tiny_qwen2_vl", head="mlp", mode="lora", lora_r=2, lora_bias="all",
                        lora_dropout=0.1, train_vision=False)
    lm_biases = [n for n, p in model.backbone.language_model.named_parameters() if n.endswith(".bias")]
    assert lm_biases and all(p.requires_grad for n, p in model.backbone.language_model.named_parameters()
                             if n.endswith(".bias"))
    ranks = {m.r["default"] for m in model.backbone.language_model.modules() if hasattr(m, "lora_A")}
    assert ranks == {2}


def test_frozen_word_embeddings_still_train_the_action_token(tiny_dir):
    model = build_model(tiny_dir, "tiny_llava", head="mlp", train_embeddings=False, train_vision=False)
    assert not model.embed.base.weight.requires_grad and model.embed.added.requires_grad
    model(make_batch())["loss"].backward()
    assert model.embed.base.weight.grad is None
    assert model.embed.added.grad[0].abs().sum() > 0  # row 0 = [LRN]
    assert all(p.grad is None for m in model.backbone.vision_modules for p in m.parameters())


@pytest.mark.parametrize("name", ["tiny_paligemma", "tiny_kosmos2", "tiny_mllama"])
def test_last_k_decoder_layers_only(tiny_dir, name):
    model = build_model(tiny_dir, name, head="mlp", train_decoder_layers=1)
    layers = model.backbone.decoder_layers
    assert all(p.requires_grad for p in layers[-1].parameters())
    assert not any(p.requires_grad for layer in layers[:-1] for p in layer.parameters())
    assert model.backbone.final_norm.weight.requires_grad


def test_frozen_backbone(tiny_dir):
    model = build_model(tiny_dir, "tiny_llava", head="gpt", mode="frozen")
    assert not any(p.requires_grad for n, p in model.vlm.named_parameters() if not n.endswith("embed_tokens.added"))
    assert all(p.requires_grad for p in model.head.parameters())


@pytest.mark.parametrize("name,mlp_name,linear", [("tiny_llava", "mlp", "down_proj"), ("tiny_kosmos2", "ffn", "fc2"),
                                                    ("tiny_mllama", "mlp", "down_proj")])
def test_gradient_checkpointing_recomputes_layers_and_keeps_gradients(tiny_dir, name, mlp_name, linear):
    grads, calls = {}, {}
    for gc in (False, True):
        model = build_model(tiny_dir, name, head="mlp", gradient_checkpointing=gc, seed=3).train()
        # count the MLP's forward (module hooks do not run during the checkpoint's recomputation)
        mlp, n = getattr(model.backbone.decoder_layers[0], mlp_name), [0]
        mlp.forward = lambda *a, _f=mlp.forward, **k: (n.__setitem__(0, n[0] + 1), _f(*a, **k))[1]
        model(make_batch())["loss"].backward()
        calls[gc] = n[0]
        grads[gc] = getattr(mlp, linear).weight.grad.clone()
    assert calls == {False: 1, True: 2}  # the checkpointed layer runs again during backward
    torch.testing.assert_close(grads[True], grads[False], atol=1e-6, rtol=1e-4)


def test_parameter_report_is_printed_per_part(tiny_dir, capsys):
    from agents.vla.model import VLAModel
    from tests.vla_helpers import make_config

    VLAModel.build(make_config(tiny_dir("tiny_llava"), "tiny_llava", mode="lora", train_vision=False))
    printed = capsys.readouterr().out
    for part in ("lora adapters", "added tokens", "vision tower", "language model", "policy head", "trainable"):
        assert part in printed
    rows = parameter_report(build_model(tiny_dir, "tiny_llava"))
    assert sum(t for _, t, _ in rows) == sum(p.numel() for p in build_model(tiny_dir, "tiny_llava").parameters()
                                             if p.requires_grad)
    assert "all" in format_parameter_report(rows)


def test_freeze_unreached_leaves_every_trainable_parameter_with_a_gradient(tiny_dir):
    model = build_model(tiny_dir, "tiny_llava", head="lstm")
    frozen = freeze_unreached(model, make_batch())
    assert frozen == ["vlm.model.vision_tower.post_layernorm.weight", "vlm.model.vision_tower.post_layernorm.bias"]
    assert all(p.grad is None for p in model.parameters())
    model(make_batch())["loss"].backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


def test_lora_adapters_on_a_bf16_backbone_are_fp32(tiny_dir):
    """The LoRA presets load the backbone in bf16; peft gives injected adapters the base layer's dtype, where
    updates at a fine-tuning learning rate (2e-5 on weights ~0.016) are below half a bf16 step and round away."""
    from dataclasses import replace

    from agents.vla.finetune import apply_finetune

    model = build_model(tiny_dir, "tiny_llava", head="mlp", train_vision=False)
    lm = model.backbone.language_model.to(torch.bfloat16)
    apply_finetune(model, replace(model.cfg.finetune, mode="lora", lora_r=2))
    lora = {n: p for n, p in lm.named_parameters() if "lora_" in n}
    assert lora and {p.dtype for p in lora.values()} == {torch.float32} and all(p.requires_grad for p in lora.values())
    assert {m.base_layer.weight.dtype for m in lm.modules() if hasattr(m, "lora_A")} == {torch.bfloat16}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = model(make_batch())["loss"]
    loss.backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for n, p in lora.items() if "lora_B" in n)
