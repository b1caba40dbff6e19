"""The non-VLM baseline: a language-conditioned policy trained from scratch, with no pretrained
vision-language model (the structure the VLAs are compared against; docs/vla_model.md#the-non-vlm-baseline).

Per frame, a small CNN encodes each camera image into one vector (conv + GroupNorm layers, spatial softmax keypoints,
the image encoder of CALVIN's baseline policies); the instruction's tokens (the project's offline
tokenizer) get learned embeddings; a GRU reads the frame's sequence `<image>* instruction [PROPRIO] [LRN]`
(image placeholders carrying the CNN vectors, [PROPRIO] the proprio encoder's output) and its state at
[LRN] is the frame's feature. History is the policy head's (LSTM or GPT over the window), with the same
action heads, chunks and losses as the VLAs.

It is a transformers `PreTrainedModel` (registered with the Auto classes under `model_type` "vla_scratch",
in-process, no remote code), so the same adapter interface, training loop, checkpoints (`save_pretrained`
config, rebuilt from it), agents and batched stepping serve it unchanged.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from transformers import AutoConfig, AutoModelForImageTextToText, PreTrainedConfig, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput

MODEL_TYPE = "vla_scratch"


class ScratchPolicyConfig(PreTrainedConfig):
    model_type = MODEL_TYPE

    def __init__(self, vocab_size: int = 1024, hidden_size: int = 256, num_hidden_layers: int = 1,
                 cnn_channels: list[int] | None = None, image_token_id: int = 4, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size  # word embeddings, image vectors, GRU width: the frame feature's size
        self.num_hidden_layers = num_hidden_layers  # GRU layers over the frame's tokens
        self.cnn_channels = list(cnn_channels or [32, 64, 128, 128])  # stride-2 conv layers (the first 5x5)
        self.image_token_id = image_token_id
        super().__init__(**kwargs)


class SpatialSoftmax(nn.Module):
    """(N, C, H, W) feature maps -> (N, 2C): the expected (x, y) in [-1, 1] of each channel's softmax."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        attention = torch.softmax(x.flatten(2).float(), dim=-1).view(n, c, h, w)
        ys = torch.linspace(-1, 1, h, device=x.device)
        xs = torch.linspace(-1, 1, w, device=x.device)
        expected = torch.stack([(attention.sum(2) * xs).sum(-1), (attention.sum(3) * ys).sum(-1)], dim=-1)
        return expected.flatten(1).to(x.dtype)


class ConvEncoder(nn.Module):
    """Image (N, 3, H, W) -> one vector (N, hidden)."""

    def __init__(self, channels: list[int], hidden: int):
        super().__init__()
        layers: list[nn.Module] = []
        for i, (c_in, c_out) in enumerate(zip([3, *channels[:-1]], channels)):
            # GroupNorm (per sample: a frame's vector never depends on its batch) keeps the maps at unit scale,
            # so the spatial softmax is peaked, not flat, from the start
            layers += [nn.Conv2d(c_in, c_out, 5 if i == 0 else 3, stride=2, padding=2 if i == 0 else 1),
                       nn.GroupNorm(math.gcd(8, c_out), c_out), nn.GELU()]
        self.convs = nn.Sequential(*layers)
        self.keypoints = SpatialSoftmax()
        self.out = nn.Sequential(nn.Linear(2 * channels[-1], hidden), nn.GELU(), nn.Linear(hidden, hidden))

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        return self.out(self.keypoints(self.convs(pixel_values)))


class TokenGRU(nn.Module):
    """The frame's token sequence -> a state per token (causal, so right padding never reaches a real token)."""

    def __init__(self, config: ScratchPolicyConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, config.pad_token_id)
        self.gru = nn.GRU(config.hidden_size, config.hidden_size, num_layers=config.num_hidden_layers, batch_first=True)
        self.norm = nn.LayerNorm(config.hidden_size)


class ScratchPolicyModel(PreTrainedModel):
    config_class = ScratchPolicyConfig
    base_model_prefix = "model"
    input_modalities = ("image", "text")
    _supports_sdpa = _supports_flash_attn = _supports_flex_attn = True  # no attention: backbone.attn_implementation is moot

    def __init__(self, config: ScratchPolicyConfig):
        super().__init__(config)
        self.vision_model = ConvEncoder(config.cnn_channels, config.hidden_size)
        self.language_model = TokenGRU(config)
        self.post_init()

    def _init_weights(self, module: nn.Module) -> None:
        if isinstance(module, (nn.Conv2d, nn.Linear, nn.GRU, nn.Embedding, nn.LayerNorm, nn.GroupNorm)):
            module.reset_parameters()  # PyTorch's own initialisation: nothing here is pretrained

    def get_input_embeddings(self) -> nn.Module:
        return self.language_model.embed_tokens

    def set_input_embeddings(self, value: nn.Module) -> None:
        self.language_model.embed_tokens = value

    def get_output_embeddings(self) -> None:
        return None  # no language-model head: nothing to decode text or action tokens with

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                pixel_values: torch.Tensor | None = None, **kwargs) -> BaseModelOutput:
        """Hidden states (B, T, hidden): the GRU over the token embeddings, image placeholders replaced (in
        order) by the CNN vectors of `pixel_values` (N, 3, H, W)."""
        embeds = self.get_input_embeddings()(input_ids)
        placeholders = (input_ids == self.config.image_token_id).unsqueeze(-1)
        if pixel_values is not None:
            images = self.vision_model(pixel_values.to(embeds.dtype))
            if int(placeholders.sum()) != images.shape[0]:
                raise ValueError(f"scratch: {int(placeholders.sum())} <image> placeholders for {images.shape[0]} images")
            embeds = embeds.masked_scatter(placeholders, images.to(embeds.dtype))  # autocast: the CNN's dtype
        elif bool(placeholders.any()):
            raise ValueError("scratch: the ids hold <image> placeholders but no pixels were given")
        states, _ = self.language_model.gru(embeds)
        return BaseModelOutput(last_hidden_state=self.language_model.norm(states))


AutoConfig.register(MODEL_TYPE, ScratchPolicyConfig, exist_ok=True)
AutoModelForImageTextToText.register(ScratchPolicyConfig, ScratchPolicyModel, exist_ok=True)
