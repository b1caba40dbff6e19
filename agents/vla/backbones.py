"""Vision-language backbones: one adapter per transformers family behind one small interface.

An adapter owns a transformers `*ForConditionalGeneration` model and its processor, and knows four
family-specific things:

1. where the parts are (language model, decoder layers, vision tower + projector), for fine-tuning;
2. how a prompt with image placeholders is formatted: the family's own chat template or processor
   expands the placeholders, once per distinct (instruction, image sizes), and the ids are cached;
3. how uint8 frames become the family's `pixel_values` (+ `image_grid_thw` / `pixel_attention_mask`),
   on tensors, with the processor's own size / mean / std / resampling;
4. which extra inputs the family's forward needs (PaliGemma's prefix `token_type_ids`, Qwen2-VL's
   M-RoPE position ids).

Everything else (embedding, image-feature scatter, attention, KV cache) is the family's own forward, except
for Kosmos-2, whose forward drops image features once a KV cache holds anything: its adapter scatters them
itself (see `Kosmos2Adapter`).
Sequences are right-padded; since attention is causal, a token's output never depends on the padding
after it, so callers gather [LRN] by explicit index. Calls with a KV cache are unpadded (batch 1 or
equal lengths).
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from harness.data.images import resize_frames

from .config import BackboneConfig, VLAConfig
from .processors import ImageTextProcessor

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
# PIL resampling codes (PIL.Image.Resampling) -> torch interpolation. LANCZOS has no torch equivalent;
# antialiased bicubic is the closest.
_RESAMPLE = {0: "nearest", 1: "bicubic", 2: "bilinear", 3: "bicubic", 4: "bilinear", 5: "bicubic"}


def _token_id(tokenizer: Any, token: str) -> int:
    """Id of a special token of the family, or the tokenizer's EOS when this tokenizer lacks it."""
    tid = tokenizer.convert_tokens_to_ids(token)
    return int(tokenizer.eos_token_id if tid is None or tid == tokenizer.unk_token_id else tid)


def _get(module: nn.Module, path: str) -> Any:
    for name in path.split("."):
        module = getattr(module, name)
    return module


def _find(module: nn.Module, path: str) -> nn.Module | None:
    """The submodule at `path`, or None where this layer has none (e.g. a cross-attention layer)."""
    try:
        found = _get(module, path)
    except AttributeError:
        return None
    return found if isinstance(found, nn.Module) else None


def _on_rows(forward: Any, seq: torch.Tensor, pos: torch.Tensor) -> Any:
    """`forward` of a row-local module (S, T, H) -> (S, T, D), run on the rows (seq[i], pos[i]) only,
    zeros elsewhere."""
    def run(x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
        if x.ndim != 3 or x.shape[0] != seq.shape[0]:
            return forward(x, *args, **kwargs)  # not the (S, T, H) it was set up for: all rows
        rows = x[seq, pos].flatten(0, 1)
        n = rows.shape[0]
        if n == 1:  # one row would take the matrix-vector path, whose rounding on the CPU depends on where the
            rows = rows.repeat(2, 1)  # weights sit in memory (mmapped safetensors: 8-byte offsets); two rows do not
        picked = forward(rows, *args, **kwargs)[:n]
        out = picked.new_zeros((*x.shape[:2], picked.shape[-1]))
        out[seq, pos] = picked.view(*seq.shape, -1)
        return out
    return run


@dataclass
class BackboneCache:
    """State of an incremental (KV-cached) run: the HF cache plus what position ids need of the past."""

    kv: Any = None  # transformers Cache, created by the first forward
    ids: torch.Tensor | None = None  # (B, T_past) all token ids so far
    # Qwen2-VL: image_grid_thw of the past images; Mllama: the real tiles of each past image
    grids: list[torch.Tensor] = field(default_factory=list)
    last_position: torch.Tensor | None = None  # Qwen2-VL: M-RoPE position ids of the last token (3, B, 1)

    @property
    def length(self) -> int:
        return 0 if self.ids is None else self.ids.shape[1]


class BackboneAdapter:
    """Base adapter; subclasses set the class attributes and override what their family does differently."""

    family: ClassVar[str]
    model_types: ClassVar[tuple[str, ...]]  # accepted `config.model_type`s
    language_model_path: ClassVar[str] = "model.language_model"
    vision_paths: ClassVar[tuple[str, ...]] = ("model.vision_tower", "model.multi_modal_projector")
    final_norm_path: ClassVar[str] = "norm"  # the language model's final norm, relative to it
    prefix_lm: ClassVar[bool] = False  # family trained with a bidirectional image+prompt prefix
    # What separates the generation prompt from the answer text: " " where the chat template's
    # generation prompt ends in a colon ("ASSISTANT:", "Assistant:"), nothing where it ends in a newline.
    answer_separator: ClassVar[str] = ""
    # The last decoder layer's modules that map each position's hidden state on its own: the attention's
    # queries and output projection, the MLP (paths relative to the layer). `last_layer_rows` runs them on
    # the positions whose outputs are read; keys and values still run everywhere (every query attends to
    # them, a KV cache keeps them).
    row_local_paths: ClassVar[tuple[str, ...]] = ("self_attn.q_proj", "self_attn.o_proj", "mlp")

    def __init__(self, model: nn.Module, processor: Any):
        if model.config.model_type not in self.model_types:
            raise ValueError(
                f"backbone family {self.family!r} expects model_type in {self.model_types}, "
                f"got {model.config.model_type!r}"
            )
        self.model = model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self._prompt_ids: dict[tuple, list[int]] = {}
        self.image_token_id = self._image_token_id()

    def _image_token_id(self) -> int:
        """The id of the image placeholder tokens whose embeddings become image features."""
        return int(self.model.config.image_token_id)

    def image_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(S, T) bool: the positions that hold an image's content (its features) in the sequence."""
        return input_ids == self.image_token_id

    @classmethod
    def check_config(cls, cfg: VLAConfig) -> None:
        """Raise a ValueError naming the setting if `cfg` asks for what this family cannot do."""

    @classmethod
    def load_processor(cls, path: str) -> Any:
        from transformers import AutoProcessor

        return AutoProcessor.from_pretrained(path, trust_remote_code=False)

    # ---------------------------------------------------------------- parts
    @property
    def hidden_size(self) -> int:
        return int(self.model.config.get_text_config().hidden_size)

    @property
    def language_model(self) -> nn.Module:
        return _get(self.model, self.language_model_path)

    @property
    def decoder_layers(self) -> nn.ModuleList:
        return self.language_model.layers

    @property
    def final_norm(self) -> nn.Module | None:
        return getattr(self.language_model, self.final_norm_path, None)

    @property
    def vision_modules(self) -> list[nn.Module]:
        return [_get(self.model, p) for p in self.vision_paths]

    @property
    def lm_head(self) -> nn.Module:
        return self.model.get_output_embeddings()

    @contextmanager
    def last_layer_rows(self, rows: torch.Tensor | None) -> Iterator[None]:
        """Within the block, the last decoder layer's row-local modules (`row_local_paths`) run on the
        positions `rows` (S, K) of each sequence only, and give zeros elsewhere: the last hidden states are
        then right at `rows` and meaningless everywhere else. For inference that reads a few positions (the
        [LRN] features): with ~40 tokens per frame, this skips most of the last layer's work. Not under
        autograd (a checkpointed layer recomputed in backward would run without it). `rows=None`: as usual.
        It patches the shared modules' `forward`: one caller at a time (the server steps on one thread)."""
        if rows is None or not self.row_local_paths:
            yield
            return
        if torch.is_grad_enabled():
            raise RuntimeError("last_layer_rows is for inference: run it under torch.no_grad()/inference_mode()")
        layer = self.decoder_layers[-1]
        modules = [m for m in (_find(layer, p) for p in self.row_local_paths) if m is not None]
        if not modules:  # renamed modules (another transformers release, a new family) would lose the speed-up unseen
            raise RuntimeError(f"{type(self).__name__}: the last decoder layer ({type(layer).__name__}) has none of "
                               f"row_local_paths {self.row_local_paths}; name its modules or opt out with ()")
        seq = torch.arange(rows.shape[0], device=rows.device).unsqueeze(1).expand_as(rows)
        saved = [m.__dict__.get("forward") for m in modules]  # an instance-level forward (hooks) comes back after
        for m in modules:
            m.forward = _on_rows(m.forward, seq, rows)
        try:
            yield
        finally:
            for m, forward in zip(modules, saved):
                del m.forward
                if forward is not None:
                    m.forward = forward

    # ---------------------------------------------------------------- text
    def format_text(self, prompt: str, n_images: int) -> str:
        """The prompt with one image placeholder per image, formatted by the family's chat template."""
        content = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": prompt}]
        if getattr(self.processor, "chat_template", None):
            return self.processor.apply_chat_template(
                [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
            )
        return self.processor.image_token * n_images + prompt

    def prompt_ids(self, prompt: str, image_sizes: tuple[tuple[int, int], ...]) -> list[int]:
        """Token ids of the formatted prompt with its image placeholders expanded (cached)."""
        key = (prompt, image_sizes)
        if key not in self._prompt_ids:
            if len(self._prompt_ids) >= 1024:  # a server given free-form instructions: bounded, as the model's caches
                self._prompt_ids.clear()
            self._prompt_ids[key] = self.encode_prompt(self.format_text(prompt, len(image_sizes)), image_sizes)
        return self._prompt_ids[key]

    def encode_prompt(self, text: str, image_sizes: tuple[tuple[int, int], ...]) -> list[int]:
        """Ids of the formatted `text`, its placeholders expanded by the family's processor itself."""
        dummies = [np.zeros((h, w, 3), dtype=np.uint8) for h, w in image_sizes]
        out = self.processor(text=[text], images=[dummies] if dummies else None)
        return list(out["input_ids"][0])

    def expand_placeholders(self, text: str, blocks: list[str]) -> list[int]:
        """Ids of `text` with its k-th image placeholder replaced by `blocks[k]`: what the family's processor
        does, for families whose processor cannot be built here."""
        pieces = text.split(self.processor.image_token)
        if len(pieces) != len(blocks) + 1:
            raise ValueError(f"{self.family}: the chat template produced {len(pieces) - 1} "
                             f"{self.processor.image_token} for {len(blocks)} images")
        return self.tokenizer(pieces[0] + "".join(b + rest for b, rest in zip(blocks, pieces[1:])))["input_ids"]

    @property
    def bos_token_id(self) -> int | None:
        return self.tokenizer.bos_token_id

    @property
    def end_of_turn_id(self) -> int:
        """The token that closes an assistant turn (the tokenizer's EOS unless the family names its own)."""
        return int(self.tokenizer.eos_token_id)

    def answer_ids(self, answer: str) -> list[int]:
        """Token ids of an answer as the model writes it after the generation prompt, closed by the
        end-of-turn token (what vision-language training supervises and generation stops at)."""
        ids = self.tokenizer(self.answer_separator + answer, add_special_tokens=False)["input_ids"]
        return list(ids) + [self.end_of_turn_id]

    # ---------------------------------------------------------------- images
    def _settings(self) -> tuple[str, float, torch.Tensor, torch.Tensor]:
        ip = self.processor.image_processor
        mode = _RESAMPLE.get(int(getattr(ip, "resample", 3) or 3), "bicubic")
        mean = torch.tensor(ip.image_mean, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(ip.image_std, dtype=torch.float32).view(3, 1, 1)
        return mode, float(ip.rescale_factor), mean, std

    def target_size(self, height: int, width: int) -> tuple[tuple[int, int], tuple[int, int] | None]:
        """(resize to (h, w), then centre-crop to (h, w) or None), from the image processor's `size`."""
        ip = self.processor.image_processor
        size = dict(ip.size)
        if size.get("height") and size.get("width"):
            return (size["height"], size["width"]), None
        if size.get("shortest_edge"):
            s = size["shortest_edge"]
            scale = s / min(height, width)
            resized = (max(s, round(height * scale)), max(s, round(width * scale)))
            crop = getattr(ip, "crop_size", None)
            if getattr(ip, "do_center_crop", False) and crop:
                return resized, (crop["height"], crop["width"])
            return resized, None
        raise ValueError(f"{self.family}: cannot read a target size from the image processor's size {size}")

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """uint8 (N, H, W, 3) -> float (N, 3, h, w): resized (+ cropped), rescaled and normalised."""
        if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
            raise ValueError(f"expected uint8 frames (N, H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
        mode, rescale, mean, std = self._settings()
        (h, w), crop = self.target_size(frames.shape[1], frames.shape[2])
        x = frames.permute(0, 3, 1, 2)
        if (h, w) != tuple(x.shape[-2:]):  # frames stored at the input size (shards converted with --resize) skip this
            x = resize_frames(x, (h, w), mode)
        x = x.float()  # this call's own tensor (a copy of uint8, or the resize's output): normalised in place
        if crop is not None:
            top, left = (h - crop[0]) // 2, (w - crop[1]) // 2
            x = x[..., top : top + crop[0], left : left + crop[1]]
        return x.mul_(rescale).sub_(mean.to(x.device)).div_(std.to(x.device))

    def pixel_inputs(self, images: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """`images[j]`: uint8 (S, H_j, W_j, 3), the j-th image of each of S sequences -> model kwargs."""
        x = torch.stack([self.preprocess(im) for im in images], dim=1)  # (S, J, 3, h, w)
        return {"pixel_values": x.flatten(0, 1).to(self.model.dtype)}

    # ---------------------------------------------------------------- run
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        pixels: dict[str, torch.Tensor] | None,
        prefix_mask: torch.Tensor | None = None,
        cache: BackboneCache | None = None,
    ) -> torch.Tensor:
        """Last-layer hidden states (B, T, H). With `cache`, runs incrementally and updates it in place.

        `prefix_mask` (B, T) marks the tokens of a bidirectional prefix; only prefix-LM families use it.
        """
        kwargs: dict[str, Any] = dict(pixels or {})
        kwargs.update(self.extra_inputs(input_ids, attention_mask, pixels, prefix_mask, cache))
        if cache is not None:
            if cache.kv is None:
                from transformers import DynamicCache

                cache.kv = DynamicCache(config=self.model.config.get_text_config())
            kwargs.update(cache=cache.kv, use_cache=True)
        else:
            kwargs["use_cache"] = False
        hidden = self.run_model(input_ids, attention_mask, kwargs)
        if cache is not None:
            cache.ids = input_ids if cache.ids is None else torch.cat([cache.ids, input_ids], dim=1)
        return hidden

    def run_model(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                  kwargs: dict[str, Any]) -> torch.Tensor:
        """The family's base model (no LM head) on the inputs: last hidden states."""
        return self.model.model(input_ids=input_ids, attention_mask=attention_mask, **kwargs).last_hidden_state

    def extra_inputs(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        pixels: dict[str, torch.Tensor] | None,
        prefix_mask: torch.Tensor | None,
        cache: BackboneCache | None,
    ) -> dict[str, Any]:
        return {}


class LlavaAdapter(BackboneAdapter):
    """LLaVA-style: any vision tower + projector + decoder LM (llava-hf/*, tiny_llava)."""

    family = "llava"
    model_types = ("llava",)
    answer_separator = " "  # "... ASSISTANT: answer</s>"


class PaliGemmaAdapter(BackboneAdapter):
    """PaliGemma 1/2: SigLIP + Gemma, `<image>* <bos> prompt \\n`, bidirectional image+prompt prefix."""

    family = "paligemma"
    model_types = ("paligemma",)
    prefix_lm = True

    def format_text(self, prompt: str, n_images: int) -> str:
        return self.processor.image_token * n_images + prompt  # the processor adds <bos> and "\n"

    def extra_inputs(self, input_ids, attention_mask, pixels, prefix_mask, cache):
        # Always pass token types: PaliGemma's Gemma runs with `is_causal=False`, so wherever transformers
        # skips building a mask (no padding, no cache) attention would silently be fully bidirectional.
        if prefix_mask is None:
            return {"token_type_ids": torch.ones_like(input_ids)}  # 1 = causal suffix everywhere
        return {"token_type_ids": (~prefix_mask).long()}  # 0 = bidirectional prefix, 1 = causal suffix


class Idefics3Adapter(BackboneAdapter):
    """Idefics3 and SmolVLM: SigLIP + pixel-shuffle connector + Llama-style LM.

    Image splitting is switched off: each camera frame is one global image of `max_image_size`.
    """

    family = "idefics3"
    model_types = ("idefics3", "smolvlm")
    language_model_path = "model.text_model"
    vision_paths = ("model.vision_model", "model.connector")
    answer_separator = " "  # "... Assistant: answer<end_of_utterance>"

    @property
    def end_of_turn_id(self) -> int:
        return _token_id(self.tokenizer, "<end_of_utterance>")

    def __init__(self, model, processor):
        processor.image_processor.do_image_splitting = False
        super().__init__(model, processor)

    def target_size(self, height, width):
        edge = self.processor.image_processor.max_image_size["longest_edge"]
        return (edge, edge), None

    def pixel_inputs(self, images):
        x = torch.stack([self.preprocess(im) for im in images], dim=1).to(self.model.dtype).contiguous()  # (S, J, 3, h, w)
        mask = torch.ones((*x.shape[:2], *x.shape[-2:]), dtype=torch.bool, device=x.device)
        return {"pixel_values": x, "pixel_attention_mask": mask}


class SmolVLMAdapter(Idefics3Adapter):
    """SmolVLM (and SmolVLM checkpoints saved as Idefics3). `SmolVLMProcessor` requires its video processor,
    which needs torchvision, so the tokenizer + image processor + chat template are used directly and the
    placeholders expanded here, as the processor does for one global image per placeholder."""

    family = "smolvlm"

    def __init__(self, model, processor):
        super().__init__(model, processor)
        vision = model.config.vision_config
        from_model = (vision.image_size // vision.patch_size) ** 2 // model.config.scale_factor**2
        self.image_seq_len = int(processor.settings.get("image_seq_len", from_model))
        if self.image_seq_len != from_model:
            raise ValueError(f"smolvlm: the processor's image_seq_len {self.image_seq_len} does not match the "
                             f"model's {from_model} image tokens per image")

    @classmethod
    def load_processor(cls, path):
        return ImageTextProcessor.from_pretrained(path, image_token="<image>", processor_class="SmolVLMProcessor")

    def encode_prompt(self, text, image_sizes):
        """`<image>` -> `<fake_token_around_image><global-img><image>*image_seq_len<fake_token_around_image>`
        (SmolVLM's layout for an image that is not split; the token names come from the tokenizer)."""
        tok = self.tokenizer
        fake = getattr(tok, "fake_image_token", None) or "<fake_token_around_image>"
        glob = getattr(tok, "global_image_token", None) or "<global-img>"
        block = fake + glob + self.processor.image_token * self.image_seq_len + fake
        return self.expand_placeholders(text, [block] * len(image_sizes))


class Qwen2VLAdapter(BackboneAdapter):
    """Qwen2-VL (and Qwen2.5-VL): dynamic-resolution ViT with 2x2 patch merging, M-RoPE positions."""

    family = "qwen2_vl"
    model_types = ("qwen2_vl", "qwen2_5_vl")
    vision_paths = ("model.visual",)

    @classmethod
    def load_processor(cls, path):
        return ImageTextProcessor.from_pretrained(path)

    @property
    def end_of_turn_id(self) -> int:
        return _token_id(self.tokenizer, "<|im_end|>")  # base checkpoints' EOS is <|endoftext|>

    def encode_prompt(self, text, image_sizes):
        """Each `<|image_pad|>` of the chat template expanded to (grid_h * grid_w / merge^2) tokens."""
        merge = self.processor.image_processor.merge_size
        patch = self.processor.image_processor.patch_size
        counts = [(h // patch) * (w // patch) // merge**2 for h, w in (self.target_size(*hw)[0] for hw in image_sizes)]
        return self.expand_placeholders(text, [self.processor.image_token * n for n in counts])

    def target_size(self, height, width):
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        ip = self.processor.image_processor
        size = dict(ip.size)
        h, w = smart_resize(
            height, width, factor=ip.patch_size * ip.merge_size,
            min_pixels=size["shortest_edge"], max_pixels=size["longest_edge"],
        )
        return (h, w), None

    def _patchify(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(S, 3, h, w) -> patches (S, gh*gw, 3*tp*p*p) in the processor's layout, grid (3,)."""
        ip = self.processor.image_processor
        p, m, tp = ip.patch_size, ip.merge_size, ip.temporal_patch_size
        s, c, h, w = x.shape
        gh, gw = h // p, w // p
        x = x.reshape(s, c, gh // m, m, p, gw // m, m, p).permute(0, 2, 5, 3, 6, 1, 4, 7)  # (S, gh/m, gw/m, m, m, C, p, p)
        x = x.unsqueeze(6).expand(*x.shape[:6], tp, p, p)  # a still image repeats over the temporal patch
        return x.reshape(s, gh * gw, c * tp * p * p), torch.tensor([1, gh, gw])

    def pixel_inputs(self, images):
        patches, grids = zip(*(self._patchify(self.preprocess(im)) for im in images))
        s = images[0].shape[0]
        # sequence-major order (all images of sequence 0, then of sequence 1, ...), as the placeholders are
        pixel_values = torch.cat([p[i] for i in range(s) for p in patches])
        grid = torch.stack(list(grids)).repeat(s, 1).to(images[0].device)
        return {"pixel_values": pixel_values.to(self.model.dtype), "image_grid_thw": grid}

    def extra_inputs(self, input_ids, attention_mask, pixels, prefix_mask, cache):
        """Explicit M-RoPE position ids, computed over the whole sequence so far (past + new)."""
        n = input_ids.shape[1]
        if cache is not None and pixels is None and cache.last_position is not None:
            # text continuing a cached sequence: one position per token after the last one
            pos = cache.last_position + torch.arange(1, n + 1, device=input_ids.device).view(1, 1, -1)
        else:
            grids = [] if cache is None else list(cache.grids)
            if pixels is not None:
                grids += list(pixels["image_grid_thw"])
                if cache is not None:
                    cache.grids = grids
            full = input_ids if cache is None or cache.ids is None else torch.cat([cache.ids, input_ids], dim=1)
            mm_types = (full == self.image_token_id).int()
            full_mask = attention_mask if cache is None else None
            if grids:
                pos, _ = self.model.model.get_rope_index(
                    full, mm_types, image_grid_thw=torch.stack(grids), attention_mask=full_mask
                )
            else:
                pos = torch.arange(full.shape[1], device=full.device).expand(3, *full.shape)
            pos = pos[..., -n:]
        if cache is not None:
            cache.last_position = pos[..., -1:]
        return {"position_ids": pos}


class Kosmos2Adapter(BackboneAdapter):
    """Kosmos-2: CLIP ViT + a resampler to `latent_query_num` latent tokens per image + a decoder with
    sinusoidal positions (`microsoft/kosmos-2-patch14-224`: 64 latents, 224 px).

    Its processor writes `<s><image> [latent placeholders] </image> text` (the placeholders are the ids
    `unk + 1 ... unk + latent_query_num`, replaced by the image features) and marks the placeholders with
    `image_embeds_position_mask`. The processor takes one image per text; the model fills any number of
    blocks in order, so here every image (gripper camera, interleaved frames) gets its own block, the blocks
    one after another before the prompt. The mask is derived from the ids: the `latent_query_num`
    positions after each `<image>`. A `<grounding>` prefix, if wanted, goes into `backbone.prompt`.

    Kosmos-2's forward ignores image features as soon as its KV cache holds anything (it expects images in
    the first `generate` step only), which would silently drop the images of a frame appended to a cached
    interleaved sequence. So this adapter runs the steps of Kosmos-2's text embedding itself: token
    embeddings, image features scattered into the placeholders (before the embedding scale, as Kosmos-2
    does), positions from the ids as its sinusoidal embedding computes them; then the decoder.
    """

    family = "kosmos2"
    model_types = ("kosmos-2",)
    language_model_path = "text_model.model"
    final_norm_path = "layer_norm"
    vision_paths = ("vision_model", "image_to_text_projection")
    row_local_paths = ("self_attn.q_proj", "self_attn.out_proj", "ffn")

    @classmethod
    def load_processor(cls, path):
        from transformers import Kosmos2Processor

        return Kosmos2Processor.from_pretrained(path, trust_remote_code=False)

    def _image_token_id(self):
        return int(self.tokenizer.convert_tokens_to_ids(self.processor.boi_token))  # opens each image block

    @property
    def n_latents(self) -> int:
        return int(self.model.config.latent_query_num)

    def format_text(self, prompt, n_images):
        block = " ".join([self.processor.boi_token] * (1 + self.n_latents) + [self.processor.eoi_token])
        return " ".join([block] * n_images + [prompt.strip()])

    def encode_prompt(self, text, image_sizes):
        """As `Kosmos2Processor`: `<s>` + text tokenized without special tokens, then the `<image>`s inside
        each block replaced by the latent placeholder ids."""
        tok = self.tokenizer
        ids = tok(tok.bos_token + text, add_special_tokens=False)["input_ids"]
        n, eoi = self.n_latents, tok.convert_tokens_to_ids(self.processor.eoi_token)
        first = tok.unk_token_id + 1
        for k in range(len(image_sizes)):
            start = 1 + k * (n + 2)
            if ids[start : start + n + 1] != [self.image_token_id] * (n + 1) or ids[start + n + 1] != eoi:
                raise ValueError(f"kosmos2: image block {k} did not tokenize to <image> <image>*{n} </image>")
            ids[start + 1 : start + 1 + n] = range(first, first + n)
        return ids

    def image_mask(self, input_ids: torch.Tensor) -> torch.Tensor:
        """(S, T) bool `image_embeds_position_mask`: the `latent_query_num` positions after each `<image>`."""
        n, t = self.n_latents, input_ids.shape[1]
        opened = F.pad((input_ids == self.image_token_id).long().cumsum(1), (n + 1, 0))  # [j + n + 1]: opens up to j
        return opened[:, n : n + t] > opened[:, :t]  # an `<image>` among the n tokens before

    def image_positions(self, input_ids: torch.Tensor) -> torch.Tensor:
        # `<image>` opens a block, before its content: the latents after it hold the image
        return self.image_mask(input_ids)

    def run_model(self, input_ids, attention_mask, kwargs):
        decoder = self.language_model
        embeds = decoder.embed_tokens(input_ids)
        mask = self.image_mask(input_ids)
        pixel_values = kwargs.pop("pixel_values", None)
        if pixel_values is not None:
            features = self.model.get_image_features(pixel_values, return_dict=True).pooler_output  # (N, latents, H)
            if int(mask.sum()) != features.shape[0] * features.shape[1]:
                raise ValueError(f"kosmos2: {int(mask.sum())} image placeholders for {features.shape[0]} images "
                                 f"of {features.shape[1]} latents")
            embeds = embeds.masked_scatter(mask.unsqueeze(-1), features.to(embeds.dtype))
        elif bool(mask.any()):
            raise ValueError("kosmos2: the ids hold image blocks but no pixels were given")
        cache = kwargs.get("cache")
        past = cache.get_seq_length() if cache is not None else 0
        pos = decoder.embed_positions
        positions = pos.create_position_ids_from_input_ids(input_ids, pos.padding_idx, past)
        return decoder(inputs_embeds=embeds, attention_mask=attention_mask, position_ids=positions,
                       **kwargs).last_hidden_state


class MllamaAdapter(BackboneAdapter):
    """Mllama (Llama 3.2 Vision): a tiled vision encoder whose features the language model reads through
    gated cross-attention layers (interleaved with its self-attention layers) instead of image tokens in its
    sequence. Each image is one `<|image|>` token in the text; `cross_attention_mask` (S, T, images, tiles)
    says which image tiles each token attends to, built from the ids by Mllama's own processor rule
    (`get_cross_attention_token_mask`: a token attends to the image group that precedes it, up to the next
    image token). So in `interleaved` history a frame's tokens read that frame's cameras, and earlier frames
    only through self-attention over their tokens (Flamingo's "attend to the immediate media").

    Images are tiled as Mllama's image processor tiles them (its canvas choice, aspect-preserving resize,
    zero padding, tiles packed to `max_image_tiles` with zero tiles, tested against it): a 200 px frame is
    one 560 px tile for Llama 3.2 Vision, 2x2 tiles of 96 px for `tiny_mllama`. The vision tower runs all
    `max_image_tiles` tiles of every image, the padding ones masked. With a KV cache the cross-attention
    layers keep the keys/values of every image so far (new images are appended), so the mask is built over
    all images of the sequence (their tile counts kept in `BackboneCache.grids`) and cut to the new rows.
    """

    family = "mllama"
    model_types = ("mllama",)
    vision_paths = ("model.vision_model", "model.multi_modal_projector")
    answer_separator = " "

    @property
    def _tiles(self) -> tuple[int, int]:
        ip = self.processor.image_processor
        return int(ip.max_image_tiles), int(ip.size["height"])

    def _canvas(self, height: int, width: int) -> tuple[int, int]:
        """(tiles high, tiles wide) of the processor's canvas for an image of this size."""
        from transformers.models.mllama.image_processing_pil_mllama import get_optimal_tiled_canvas

        max_tiles, tile = self._tiles
        canvas_h, canvas_w = get_optimal_tiled_canvas(height, width, max_tiles, tile)
        return int(canvas_h) // tile, int(canvas_w) // tile

    def target_size(self, height, width):
        from transformers.models.mllama.image_processing_pil_mllama import get_image_size_fit_to_canvas

        _, tile = self._tiles
        rows, cols = self._canvas(height, width)
        h, w = get_image_size_fit_to_canvas(height, width, rows * tile, cols * tile, tile)
        return (int(h), int(w)), None

    def _tiled(self, frames: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """uint8 (S, H, W, 3) -> (S, max_tiles, 3, tile, tile), (rows, cols) of real tiles."""
        max_tiles, tile = self._tiles
        rows, cols = self._canvas(frames.shape[1], frames.shape[2])
        x = self.preprocess(frames)  # (S, 3, h, w)
        _, _, mean, std = self._settings()
        canvas = (-mean / std).to(x).expand(x.shape[0], 3, rows * tile, cols * tile).clone()  # 0 before normalising
        canvas[..., : x.shape[2], : x.shape[3]] = x
        tiles = canvas.reshape(-1, 3, rows, tile, cols, tile).permute(0, 2, 4, 1, 3, 5).flatten(1, 2)
        return F.pad(tiles, (0, 0, 0, 0, 0, 0, 0, max_tiles - rows * cols)), (rows, cols)

    def pixel_inputs(self, images):
        """pixel_values (S, J, max_tiles, 3, tile, tile), aspect_ratio_ids (S, J), aspect_ratio_mask (S, J, max_tiles)."""
        from transformers.models.mllama.image_processing_pil_mllama import convert_aspect_ratios_to_ids_np

        max_tiles, _ = self._tiles
        tiled = [self._tiled(im) for im in images]
        s, device = images[0].shape[0], images[0].device
        ratio_ids = convert_aspect_ratios_to_ids_np([[layout for _, layout in tiled]], max_tiles)[0]
        n_tiles = torch.tensor([rows * cols for _, (rows, cols) in tiled], device=device)
        mask = (torch.arange(max_tiles, device=device) < n_tiles.unsqueeze(1)).long()
        return {"pixel_values": torch.stack([t for t, _ in tiled], dim=1).to(self.model.dtype),
                "aspect_ratio_ids": torch.as_tensor(ratio_ids, device=device).long().expand(s, -1),
                "aspect_ratio_mask": mask.expand(s, -1, -1)}

    def cross_attention_mask(self, full_ids: torch.Tensor, n_new: int, n_tiles: list[int]) -> torch.Tensor:
        """(S, n_new, images, max_tiles): Mllama's processor rule over the whole sequence, its last n_new rows;
        `n_tiles`: the real tiles of each image of the sequence."""
        from transformers.models.mllama.processing_mllama import (
            convert_sparse_cross_attention_mask_to_dense, get_cross_attention_token_mask)

        spans = [get_cross_attention_token_mask(ids, self.image_token_id) for ids in full_ids.tolist()]
        if any(len(r) != len(n_tiles) for r in spans):
            raise ValueError(f"mllama: {[len(r) for r in spans]} <|image|> tokens per sequence for {len(n_tiles)} images")
        dense = convert_sparse_cross_attention_mask_to_dense(spans, [n_tiles] * len(spans), self._tiles[0],
                                                             full_ids.shape[1])
        return torch.from_numpy(dense[:, -n_new:]).to(full_ids.device)

    def extra_inputs(self, input_ids, attention_mask, pixels, prefix_mask, cache):
        tiles = [] if cache is None else list(cache.grids)
        if pixels is not None:
            tiles.append(pixels["aspect_ratio_mask"][0].sum(-1))
            if cache is not None:
                cache.grids = tiles
        if not tiles:
            return {}  # text only: Mllama skips its cross-attention layers
        full = input_ids if cache is None or cache.ids is None else torch.cat([cache.ids, input_ids], dim=1)
        return {"cross_attention_mask": self.cross_attention_mask(full, input_ids.shape[1], torch.cat(tiles).tolist())}


class ScratchAdapter(BackboneAdapter):
    """The non-VLM baseline (`agents/vla/scratch.py`): a CNN vector per camera image in its one `<image>`
    placeholder, learned word embeddings, a GRU over the frame's tokens; no pretrained model, no LM head.

    Only what needs no language model applies: `post` history with a continuous head (mlp, lstm, gpt),
    full or frozen training (`check_config` names anything else)."""

    family = "scratch"
    model_types = ("vla_scratch",)
    language_model_path = "language_model"
    vision_paths = ("vision_model",)
    row_local_paths = ()  # a GRU: every position's output feeds the next

    @classmethod
    def check_config(cls, cfg):
        problems = []
        if cfg.history != "post":
            problems.append(f"history={cfg.history!r} (interleaved needs a sequence model over the frames; use post)")
        if cfg.head.type == "discrete":
            problems.append("head.type='discrete' (action tokens are decoded by a language model's head)")
        if cfg.finetune.mode == "lora":
            problems.append("finetune.mode='lora' (nothing is pretrained: train it fully)")
        if cfg.finetune.train_decoder_layers >= 0:
            problems.append("finetune.train_decoder_layers (it has no decoder layers)")
        if cfg.finetune.gradient_checkpointing:
            problems.append("finetune.gradient_checkpointing")
        if problems:
            raise ValueError("model.backbone.family=scratch (the non-VLM baseline) does not support "
                             + "; ".join(problems))

    @classmethod
    def load_processor(cls, path):
        return ImageTextProcessor.from_pretrained(path, image_token="<image>")

    def encode_prompt(self, text, image_sizes):
        return self.tokenizer(text)["input_ids"]  # one placeholder per image, no expansion

    def run_model(self, input_ids, attention_mask, kwargs):
        return self.model(input_ids=input_ids, attention_mask=attention_mask,
                          pixel_values=kwargs.get("pixel_values")).last_hidden_state


ADAPTERS: dict[str, type[BackboneAdapter]] = {
    a.family: a
    for a in (LlavaAdapter, PaliGemmaAdapter, Idefics3Adapter, SmolVLMAdapter, Qwen2VLAdapter, Kosmos2Adapter,
              MllamaAdapter, ScratchAdapter)
}


def adapter_class(family: str) -> type[BackboneAdapter]:
    if family not in ADAPTERS:
        raise ValueError(f"unknown backbone family {family!r}; known families: {sorted(ADAPTERS)}")
    return ADAPTERS[family]


def load_backbone(cfg: BackboneConfig) -> BackboneAdapter:
    """Build the adapter for `cfg`: `from_pretrained` on a hub id / local folder, or a tiny preset."""
    cls = adapter_class(cfg.family)
    from . import scratch  # noqa: F401  (registers the non-VLM baseline with transformers' Auto classes)

    if cfg.tiny is not None:
        from .tiny import build_tiny

        model, processor = build_tiny(cfg.tiny, _DTYPES[cfg.dtype], **cfg.tiny_size)
    else:
        from transformers import AutoModelForImageTextToText

        model = AutoModelForImageTextToText.from_pretrained(
            cfg.pretrained, dtype=_DTYPES[cfg.dtype], attn_implementation=cfg.attn_implementation, trust_remote_code=False
        )
        processor = cls.load_processor(cfg.pretrained)
    return cls(model, processor)


def backbone_from_folders(cfg: BackboneConfig, config_dir: str, processor_dir: str) -> BackboneAdapter:
    """Random-init backbone from a saved `config.json` + processor folder (checkpoint loading, no download)."""
    from transformers import AutoConfig, AutoModelForImageTextToText

    from . import scratch  # noqa: F401  (registers the non-VLM baseline with transformers' Auto classes)

    cls = adapter_class(cfg.family)
    hf_config = AutoConfig.from_pretrained(config_dir, trust_remote_code=False)
    model = AutoModelForImageTextToText.from_config(
        hf_config, dtype=_DTYPES[cfg.dtype], attn_implementation=cfg.attn_implementation
    )
    return cls(model, cls.load_processor(processor_dir))
