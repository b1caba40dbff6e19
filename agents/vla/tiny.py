"""Tiny random-init backbones for CPU training and tests, and the project's offline tokenizer.

Each preset is a real transformers architecture (same classes as the hub checkpoints) shrunk to about
2M parameters: 2 decoder layers of width 256, a 2-layer vision tower of width 128 on 96-112 px images, and
9-36 image tokens per camera frame (`TinySize`; `backbone.tiny_size` in the model config changes it). The tokenizer is a byte-level BPE trained here on the CALVIN task
vocabulary and the sim VQA questions and answers (`TASK_CORPUS`, `VQA_CORPUS`: every string is encodable,
and their words are single tokens), plus each family's special tokens and a chat template in that
family's style. `build_tiny(name)` returns `(model, processor)`;
`save_pretrained` both and load them back with `from_pretrained`, exactly as for a hub checkpoint.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch

from .processors import ImageTextProcessor

# Phrasings of the 34 CALVIN tasks and the prompt words (written for this project; the BPE merges are
# learnt from them, the byte alphabet covers any other text).
TASK_CORPUS = """
open the drawer. pull the handle to open the drawer. grasp the drawer handle and open it.
close the drawer. push the drawer shut. push the handle to close the drawer.
move the sliding door to the left. push the sliding door to the left side. slide the door left.
move the sliding door to the right. push the sliding door to the right side. slide the door right.
turn on the light bulb. push the switch upwards to turn on the yellow lamp. toggle the switch up.
turn off the light bulb. push the switch downwards to turn off the yellow lamp. toggle the switch down.
turn on the led light. press the button to turn on the green light. push the button to switch on the led.
turn off the led light. press the button to turn off the green light. push the button to switch off the led.
lift the red block from the table. pick up the red block lying on the table. grasp the red block.
lift the blue block from the table. pick up the blue block lying on the table. grasp the blue block.
lift the pink block from the table. pick up the pink block lying on the table. grasp the pink block.
lift the red block from the sliding cabinet. pick up the red block in the slider.
lift the blue block from the sliding cabinet. pick up the blue block in the slider.
lift the pink block from the sliding cabinet. pick up the pink block in the slider.
lift the red block from the drawer. pick up the red block in the drawer.
lift the blue block from the drawer. pick up the blue block in the drawer.
lift the pink block from the drawer. pick up the pink block in the drawer.
place the block in the sliding cabinet. put the grasped object in the slider. store the block in the cabinet.
place the block in the drawer. put the grasped object in the drawer. store the block in the drawer.
push the block into the drawer. sweep the object into the open drawer.
stack the blocks. place the grasped block on top of another block. put the block on the other block.
unstack the blocks. take off the stacked block. remove the top block from the stack.
rotate the red block to the right. turn the red block clockwise. rotate the red block to the left.
rotate the blue block to the right. turn the blue block clockwise. rotate the blue block to the left.
rotate the pink block to the right. turn the pink block clockwise. rotate the pink block to the left.
push the red block to the right. slide the red block right. push the red block to the left.
push the blue block to the right. slide the blue block right. push the blue block to the left.
push the pink block to the right. slide the pink block right. push the pink block to the left.
go push the red block towards the right. go slide the pink block towards the left.
what action should the robot take to complete the task? in order to. user assistant system.
"""

# The words of the sim VQA questions and answers (harness/data/vl/questions.py): kept here as text, so
# that the tokenizer, and with it every tiny checkpoint's vocabulary, changes only when this does;
# tests/test_vl_questions.py checks that every word of every phrasing and answer is one token.
VQA_CORPUS = """
Is the drawer open?
Is the drawer closed?
Is the drawer open or closed?
Has the drawer been pulled out?
Is the drawer shut?
What state is the drawer in?
Is the sliding door on the left or on the right?
Where is the sliding door?
Is the sliding door pushed to the left?
Is the sliding door on the right side?
Which side of the cabinet is the sliding door on?
Is the green light on?
Is the LED on?
Is the green light off?
Is the green lamp on or off?
Is the LED lit?
Is the yellow light on?
Is the light bulb on?
Is the yellow lamp off?
Is the light bulb on or off?
Is the bulb lit?
Which block is on the table?
What block is in the drawer?
Which block can you see in the sliding cabinet?
Name the block that is on the table.
Where is the red block?
Where is the blue block placed?
Where can you see the pink block?
In which place is the red block?
Which block is to the left of the red block?
What block is right of the blue block?
Which blocks are on the left of the pink block?
Which block do you see to the right of the red block?
How many blocks are on the table?
How many blocks lie on the table?
Count the blocks on the table.
What is the number of blocks on the table?
Describe the scene. Give a short caption of the image.
What do you see?
Describe the state of the table in one sentence.
yes. no. open. closed. left. right. on. off. zero. one. two. three. no block.
the red block. the blue block and the pink block. the red block, the blue block and the pink block.
on the table. in the drawer. in the left side of the cabinet. in the right side of the cabinet.
on the red block. on the blue block. on the pink block.
The drawer is open, the sliding door is on the left, the green light is on and the yellow light is off.
The drawer is closed, the sliding door is on the right, the green light is off and the yellow light is on.
The red block is on the table, the blue block is in the drawer and the pink block is on the red block.
"""

_SPECIALS = {  # per family: (specials, bos, eos, pad, image token, extra tokens)
    "llava": dict(specials=["<pad>", "<s>", "</s>", "<unk>", "<image>"], bos="<s>", eos="</s>", pad="<pad>",
                  add_bos=True),
    "paligemma": dict(specials=["<pad>", "<eos>", "<bos>", "<unk>", "<image>"], bos="<bos>", eos="<eos>",
                      pad="<pad>", add_bos=False),
    "smolvlm": dict(specials=["<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<image>",
                              "<fake_token_around_image>", "<global-img>"], bos="<|im_start|>",
                    eos="<end_of_utterance>", pad="<|endoftext|>", add_bos=False),
    "qwen2_vl": dict(specials=["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>",
                               "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"], bos=None, eos="<|im_end|>",
                     pad="<|endoftext|>", add_bos=False),
}
_SPECIALS["idefics3"] = _SPECIALS["smolvlm"]
_SPECIALS["scratch"] = _SPECIALS["llava"]
# XLM-R layout as Kosmos-2's tokenizer (<s>=0, <pad>=1, </s>=2, <unk>=3); Kosmos2Processor adds <image>, </image>,
# <grounding>, ... and the <patch_index_*> tokens itself
_SPECIALS["kosmos2"] = dict(specials=["<s>", "<pad>", "</s>", "<unk>"], bos="<s>", eos="</s>", pad="<pad>",
                            unk="<unk>", add_bos=False)

# Llama 3's names; Mllama's processor writes `<|image|>* <|begin_of_text|> text` itself (no BOS from the tokenizer)
_SPECIALS["mllama"] = dict(specials=["<|begin_of_text|>", "<|end_of_text|>", "<|finetune_right_pad_id|>", "<|image|>",
                                     "<|eot_id|>", "<|python_tag|>"], bos="<|begin_of_text|>", eos="<|end_of_text|>",
                           pad="<|finetune_right_pad_id|>", add_bos=False)

# Chat templates in each family's style; `{"type": "image"}` items become the family's placeholder.
_CHAT_TEMPLATES = {
    "llava": (
        "{% for m in messages %}{% if m['role'] == 'user' %}USER: {% for c in m['content'] %}"
        "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
        "{% else %} ASSISTANT: {% for c in m['content'] %}{{ c['text'] }}{% endfor %}</s>{% endif %}{% endfor %}"
        "{% if add_generation_prompt %} ASSISTANT:{% endif %}"
    ),
    "smolvlm": (
        "<|im_start|>{% for m in messages %}{{ m['role'] | capitalize }}:{% for c in m['content'] %}"
        "{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
        "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}"
    ),
    "qwen2_vl": (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% for c in m['content'] %}"
        "{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% else %}{{ c['text'] }}"
        "{% endif %}{% endfor %}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    ),
}
_CHAT_TEMPLATES["idefics3"] = _CHAT_TEMPLATES["smolvlm"]


def build_tokenizer(family: str, vocab_size: int = 1024, corpus: str = TASK_CORPUS + VQA_CORPUS):
    """A byte-level BPE `PreTrainedTokenizerFast` trained offline on `corpus`, with `family`'s specials."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    if family not in _SPECIALS:
        raise ValueError(f"no tiny tokenizer for family {family!r}; known: {sorted(_SPECIALS)}")
    spec = _SPECIALS[family]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=spec["specials"], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    lines = [line.strip() for line in corpus.replace(". ", ".\n").splitlines() if line.strip()]
    tok.train_from_iterator(lines + [" " + line for line in lines], trainer)  # words with and without a leading space
    if spec["add_bos"]:
        bos_id = tok.token_to_id(spec["bos"])
        tok.post_processor = processors.TemplateProcessing(
            single=f"{spec['bos']} $A", pair=f"{spec['bos']} $A {spec['bos']} $B", special_tokens=[(spec["bos"], bos_id)]
        )
    named = {"bos_token": spec["bos"], "eos_token": spec["eos"], "pad_token": spec["pad"], "unk_token": spec.get("unk")}
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, **{k: v for k, v in named.items() if v is not None})
    if family in _CHAT_TEMPLATES:
        tokenizer.chat_template = _CHAT_TEMPLATES[family]
    return tokenizer


@dataclass(frozen=True)
class TinySize:
    """Widths and depths of a tiny backbone (`backbone.tiny_size` in the model config overrides them)."""

    hidden: int = 256  # language model width (head_dim = hidden / heads)
    layers: int = 2
    heads: int = 4
    kv_heads: int = 2
    vision_hidden: int = 128
    vision_layers: int = 2
    vision_heads: int = 2
    image_size: int = 96  # Qwen2-VL: static frames become image_size + 16 px (a multiple of 28)
    patch_size: int = 16  # Qwen2-VL uses its own 14


@dataclass(frozen=True)
class TinyPreset:
    family: str
    build: Callable[[TinySize], tuple[Any, Any]]
    about: str


def _text_kwargs(tokenizer, size: TinySize, **extra) -> dict[str, Any]:
    kw = dict(
        vocab_size=len(tokenizer), hidden_size=size.hidden, intermediate_size=2 * size.hidden,
        num_hidden_layers=size.layers, num_attention_heads=size.heads, num_key_value_heads=size.kv_heads,
        head_dim=size.hidden // size.heads, max_position_embeddings=4096,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
    )
    kw.update(extra)
    return kw


def _vision_kwargs(size: TinySize) -> dict[str, Any]:
    return dict(hidden_size=size.vision_hidden, intermediate_size=2 * size.vision_hidden,
                num_hidden_layers=size.vision_layers, num_attention_heads=size.vision_heads,
                image_size=size.image_size, patch_size=size.patch_size)


def _tiny_llava(size: TinySize):
    from transformers import AutoModelForImageTextToText, CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tokenizer = build_tokenizer("llava")
    px = size.image_size
    image_processor = CLIPImageProcessorPil(size={"shortest_edge": px}, crop_size={"height": px, "width": px})
    processor = LlavaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, patch_size=size.patch_size,
        vision_feature_select_strategy="default", chat_template=_CHAT_TEMPLATES["llava"], num_additional_image_tokens=1,
    )
    vision = CLIPVisionConfig(**_vision_kwargs(size), projection_dim=size.vision_hidden)
    text = LlamaConfig(**_text_kwargs(tokenizer, size), tie_word_embeddings=True)
    config = LlavaConfig(vision_config=vision, text_config=text, image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                         vision_feature_select_strategy="default", vision_feature_layer=-1, tie_word_embeddings=True)
    return AutoModelForImageTextToText.from_config(config), processor


def _tiny_paligemma(size: TinySize):
    from transformers import AutoModelForImageTextToText, GemmaConfig, PaliGemmaConfig, PaliGemmaProcessor, SiglipVisionConfig
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    tokenizer = build_tokenizer("paligemma")
    px = size.image_size
    image_processor = SiglipImageProcessorPil(size={"height": px, "width": px}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    image_processor.image_seq_length = (px // size.patch_size) ** 2
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=tokenizer)  # adds <loc>/<seg> tokens
    vision = SiglipVisionConfig(**_vision_kwargs(size), projection_dim=size.hidden, vision_use_head=False)  # as the hub PaliGemmas
    text = GemmaConfig(**_text_kwargs(tokenizer, size))
    config = PaliGemmaConfig(vision_config=vision, text_config=text, image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                             projection_dim=size.hidden)
    config.text_config.vocab_size = len(tokenizer)
    return AutoModelForImageTextToText.from_config(config), processor


def _tiny_idefics3_like(family: str, size: TinySize):
    from transformers import AutoModelForImageTextToText, LlamaConfig

    tokenizer = build_tokenizer(family)
    px = size.image_size
    image_seq_len = (px // size.patch_size) ** 2 // 4  # 2x2 pixel shuffle
    text = LlamaConfig(**_text_kwargs(tokenizer, size), tie_word_embeddings=True)
    if family == "smolvlm":
        from transformers import SmolVLMConfig as Config
        from transformers.models.smolvlm.image_processing_pil_smolvlm import SmolVLMImageProcessorPil as ImageProcessor
    else:
        from transformers import Idefics3Config as Config
        from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil as ImageProcessor
    config = Config(vision_config=_vision_kwargs(size), text_config=text.to_dict(), scale_factor=2,
                    image_token_id=tokenizer.convert_tokens_to_ids("<image>"))
    image_processor = ImageProcessor(size={"longest_edge": px}, max_image_size={"longest_edge": px},
                                     do_image_splitting=False, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    if family == "smolvlm":  # SmolVLMProcessor cannot be built without torchvision (its video processor needs it)
        processor = ImageTextProcessor(image_processor, tokenizer, _CHAT_TEMPLATES[family], image_token="<image>",
                                       processor_class="SmolVLMProcessor", settings={"image_seq_len": image_seq_len})
    else:
        from transformers import Idefics3Processor

        processor = Idefics3Processor(image_processor=image_processor, tokenizer=tokenizer, image_seq_len=image_seq_len,
                                      chat_template=_CHAT_TEMPLATES[family])
    config.text_config.vocab_size = len(tokenizer)
    config.vocab_size = len(tokenizer)
    return AutoModelForImageTextToText.from_config(config), processor


def _tiny_qwen2_vl(size: TinySize):
    from transformers import AutoModelForImageTextToText, Qwen2VLConfig
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tokenizer = build_tokenizer("qwen2_vl")
    # 200x200 static frames -> the multiple of 28 above image_size (112 px: 8x8 patches of 14 -> 16 tokens);
    # 84x84 gripper frames stay 84 px (9 tokens)
    edge = 28 * (size.image_size // 28 + 1)
    image_processor = Qwen2VLImageProcessorPil(size={"shortest_edge": 28 * 28, "longest_edge": edge * edge + 56})
    # Qwen2VLProcessor cannot be built without torchvision (its video processor needs it)
    processor = ImageTextProcessor(image_processor, tokenizer, _CHAT_TEMPLATES["qwen2_vl"])
    head_dim = size.hidden // size.heads
    section = [head_dim // 8, 3 * head_dim // 16, 3 * head_dim // 16]  # temporal/height/width rotary split
    text = _text_kwargs(tokenizer, size, rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                          "mrope_section": section})
    vision = dict(depth=size.vision_layers, embed_dim=size.vision_hidden, hidden_size=size.hidden,
                  num_heads=size.vision_heads, mlp_ratio=2, patch_size=14, spatial_merge_size=2,
                  temporal_patch_size=2, in_channels=3)
    config = Qwen2VLConfig(text_config=text, vision_config=vision,
                           image_token_id=tokenizer.convert_tokens_to_ids("<|image_pad|>"),
                           video_token_id=tokenizer.convert_tokens_to_ids("<|video_pad|>"),
                           vision_start_token_id=tokenizer.convert_tokens_to_ids("<|vision_start|>"),
                           tie_word_embeddings=True)
    return AutoModelForImageTextToText.from_config(config), processor


def _tiny_kosmos2(size: TinySize):
    from transformers import AutoModelForImageTextToText, Kosmos2Config, Kosmos2Processor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    tokenizer = build_tokenizer("kosmos2")
    px = size.image_size
    image_processor = CLIPImageProcessorPil(size={"height": px, "width": px}, do_center_crop=False)
    processor = Kosmos2Processor(image_processor=image_processor, tokenizer=tokenizer)  # adds its tag tokens
    text = dict(vocab_size=len(tokenizer), embed_dim=size.hidden, ffn_dim=2 * size.hidden, layers=size.layers,
                attention_heads=size.heads, max_position_embeddings=4096, dropout=0.0, attention_dropout=0.0,
                pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id)
    config = Kosmos2Config(text_config=text, vision_config=_vision_kwargs(size), latent_query_num=16)
    return AutoModelForImageTextToText.from_config(config), processor


def _tiny_mllama(size: TinySize):
    """Mllama with `layers` self-attention layers and one gated cross-attention layer after the first; a
    vision encoder of `vision_layers` local + 1 global layers, 4 tiles per image as Llama 3.2 Vision.
    Random init leaves the cross-attention gates at zero (the language model blind to images, as in
    Mllama's pre-training start); the preset opens them (tanh(1)), as they are in a trained checkpoint."""
    from transformers import AutoModelForImageTextToText, MllamaConfig, MllamaProcessor
    from transformers.models.mllama.image_processing_pil_mllama import MllamaImageProcessorPil

    tokenizer = build_tokenizer("mllama")
    px = size.image_size
    image_processor = MllamaImageProcessorPil(size={"height": px, "width": px}, max_image_tiles=4)
    processor = MllamaProcessor(image_processor=image_processor, tokenizer=tokenizer)
    vision = dict(hidden_size=size.vision_hidden, intermediate_size=2 * size.vision_hidden,
                  num_hidden_layers=size.vision_layers, num_global_layers=1, attention_heads=size.vision_heads,
                  image_size=px, patch_size=size.patch_size, max_num_tiles=4,
                  intermediate_layers_indices=[size.vision_layers - 1], vision_output_dim=2 * size.vision_hidden)
    text = _text_kwargs(tokenizer, size, num_hidden_layers=size.layers + 1, cross_attention_layers=[1],
                        tie_word_embeddings=False)
    text.pop("head_dim")
    config = MllamaConfig(vision_config=vision, text_config=text,
                          image_token_index=tokenizer.convert_tokens_to_ids("<|image|>"))
    model = AutoModelForImageTextToText.from_config(config)
    with torch.no_grad():
        for layer in model.model.language_model.layers:
            if hasattr(layer, "cross_attn_attn_gate"):
                layer.cross_attn_attn_gate.fill_(1.0)
                layer.cross_attn_mlp_gate.fill_(1.0)
    return model, processor


def _scratch(size: TinySize):
    """The non-VLM baseline (agents/vla/scratch.py): CNN channels 32, 64, vision_hidden, vision_hidden on
    image_size px frames; word embeddings and a `layers`-layer GRU of width `hidden`."""
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    from .scratch import ScratchPolicyConfig, ScratchPolicyModel

    tokenizer = build_tokenizer("scratch")
    px = size.image_size
    image_processor = SiglipImageProcessorPil(size={"height": px, "width": px}, image_mean=[0.5] * 3, image_std=[0.5] * 3)
    processor = ImageTextProcessor(image_processor, tokenizer, image_token="<image>")
    config = ScratchPolicyConfig(vocab_size=len(tokenizer), hidden_size=size.hidden, num_hidden_layers=size.layers,
                                 cnn_channels=[32, 64, size.vision_hidden, size.vision_hidden],
                                 image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
                                 pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                                 eos_token_id=tokenizer.eos_token_id)
    return ScratchPolicyModel(config), processor


TINY_PRESETS: dict[str, TinyPreset] = {
    "tiny_llava": TinyPreset("llava", _tiny_llava, "CLIP ViT 96px/16 (36 tokens) + Llama"),
    "tiny_paligemma": TinyPreset("paligemma", _tiny_paligemma, "SigLIP 96px/16 (36 tokens) + Gemma, prefix-LM"),
    "tiny_idefics3": TinyPreset("idefics3", lambda s: _tiny_idefics3_like("idefics3", s),
                                "Idefics3 SigLIP 96px/16 + 2x2 pixel shuffle (9 tokens) + Llama"),
    "tiny_smolvlm": TinyPreset("smolvlm", lambda s: _tiny_idefics3_like("smolvlm", s),
                               "SmolVLM SigLIP 96px/16 + 2x2 pixel shuffle (9 tokens) + Llama"),
    "tiny_qwen2_vl": TinyPreset("qwen2_vl", _tiny_qwen2_vl, "Qwen2-VL ViT 112px/14, 2x2 merge (16 tokens) + Qwen2"),
    "tiny_kosmos2": TinyPreset("kosmos2", _tiny_kosmos2, "Kosmos-2 CLIP ViT 96px/16 + resampler (16 latents) + decoder"),
    "tiny_mllama": TinyPreset("mllama", _tiny_mllama,
                              "Mllama ViT 96px/16 (4 tiles, 37 patches each) + Llama with a gated cross-attention layer"),
    "scratch": TinyPreset("scratch", _scratch, "non-VLM baseline: CNN + spatial softmax per camera, word embeddings, GRU"),
}


def build_tiny(name: str, dtype: torch.dtype = torch.float32, **size: int):
    """Random-init `(model, processor)` of the tiny preset `name`, its weights in `dtype` (as `from_pretrained`
    loads a hub model's in backbone.dtype); `size` overrides `TinySize` fields."""
    if name not in TINY_PRESETS:
        raise ValueError(f"unknown tiny backbone {name!r}; known: {sorted(TINY_PRESETS)}")
    unknown = set(size) - set(TinySize.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown tiny_size fields {sorted(unknown)}; known: {sorted(TinySize.__dataclass_fields__)}")
    with _default_dtype(dtype):  # what from_config(dtype=) does: parameters are created in it, not cast afterwards
        return TINY_PRESETS[name].build(TinySize(**size))


@contextmanager
def _default_dtype(dtype: torch.dtype) -> Iterator[None]:
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(previous)
