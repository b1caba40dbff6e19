"""Vision-language (VL) data: the sim VQA generator, the LLaVA-style reader, VL batches, mixed loading.

- `scene`: sample scene states, set and settle them in the built-in scene, render the static camera, and
  read the `SceneFacts` the answers come from (`SceneRenderer`, `read_facts`).
- `questions`: question types, phrasings and canonical answers (`ask_all`, `QUESTION_TYPES`).
- `generate`: the dataset on disk (PNG + LLaVA-style train.json / val.json); `python -m harness.data.vl generate`.
- `llava`: `read_llava_json`, `LlavaDataset`, `load_image`, `collate_vl` (the VL batch).
- `mixing`: `CreditSchedule` (which source serves each micro-batch, at fixed fractions, resumable), `EpochSampler`.
- `config`: `VLDataConfig` (configs/data/vl_sim.yaml), `build_vl_dataset`, `make_vl_loader`.

The VL batch (`collate_vl`):

| key | type, shape | meaning |
|---|---|---|
| `images` | uint8 tensor (B, 200, 200, 3) | the image (static-camera size) |
| `prompts` | list[str] (B) | the questions (no `<image>` placeholder: the model's chat template adds it) |
| `answers` | list[str] (B) | the target answers |
| `question_types` | list[str] (B) | e.g. "drawer"; "" for data without types |
| `ids` | list[str] (B) | entry id (+ "#turn") |

A model consumes it as `model.vl_loss(batch["images"], batch["prompts"], batch["answers"])`.
"""
