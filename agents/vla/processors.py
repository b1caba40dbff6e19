"""`ImageTextProcessor`: a tokenizer + image processor + chat template standing in for a family's transformers
processor where that processor cannot be built without torchvision (Qwen2-VL's and SmolVLM's video
processors need it). The backbone adapters load it, the tiny presets build it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class ImageTextProcessor:
    """Tokenizer + image processor + chat template (+ scalar processor settings), saved and loaded like a
    processor.

    For families whose transformers processor cannot be built here: `Qwen2VLProcessor` and
    `SmolVLMProcessor` require their video processor, which needs torchvision. The adapter expands the
    image placeholders itself. Loads a hub folder of those families as well (tokenizer files,
    `preprocessor_config.json`, the chat template from `chat_template.jinja`/`chat_template.json`/the
    tokenizer config, and scalar settings such as SmolVLM's `image_seq_len` from `processor_config.json`).
    """

    def __init__(self, image_processor: Any, tokenizer: Any, chat_template: str | None = None,
                 image_token: str = "<|image_pad|>", processor_class: str | None = None,
                 settings: dict[str, Any] | None = None):
        self.image_processor = image_processor
        self.tokenizer = tokenizer
        self.chat_template = chat_template or getattr(tokenizer, "chat_template", None)
        self.image_token = image_token
        self.processor_class = processor_class  # the family's transformers processor, recorded when saving
        self.settings = dict(settings or {})

    def apply_chat_template(self, conversation, **kwargs) -> str:
        return self.tokenizer.apply_chat_template(conversation, chat_template=self.chat_template, **kwargs)

    def save_pretrained(self, path: str) -> None:
        self.tokenizer.chat_template = self.chat_template
        self.tokenizer.save_pretrained(path)
        self.image_processor.save_pretrained(path)
        if self.settings or self.processor_class:
            config = {**self.settings, **({"processor_class": self.processor_class} if self.processor_class else {})}
            (Path(path) / "processor_config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")

    @classmethod
    def from_pretrained(cls, path: str, image_token: str = "<|image_pad|>",
                        processor_class: str | None = None) -> "ImageTextProcessor":
        from transformers import AutoImageProcessor, AutoTokenizer
        from transformers.processing_utils import ProcessorMixin

        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=False)
        found, _ = ProcessorMixin.get_processor_dict(path)  # reads processor_config.json + chat template files
        template = found.pop("chat_template", None)
        if isinstance(template, dict):
            template = template.get("default")
        settings = {k: v for k, v in found.items() if k != "processor_class" and not isinstance(v, (dict, list))}
        return cls(AutoImageProcessor.from_pretrained(path, trust_remote_code=False), tokenizer, template, image_token, processor_class,
                   settings)
