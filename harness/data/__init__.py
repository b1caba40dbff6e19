"""Datasets in CALVIN's on-disk format, and training windows made from them.

- `calvin_format`: the frame spec, `Problem`/`CalvinFormatError`, `LangAnnotations`, `CalvinSplit` (reader),
  `rel_actions_from_absolute`.
- `calvin_writer`: `CalvinDatasetWriter` / `EpisodeWriter` (crash-safe, resumable, worker-friendly),
  `finalize_dataset` (statistics.yaml).
- `windows`: `WindowSpec` (what a window holds: the model's), `WindowOptions` (how windows are drawn),
  `WindowDataset`, `NpzFrameSource`, `collate_windows` (the batch of docs/ARCHITECTURE.md), `random_shift`.
- `shards`: `convert` to memory-mapped shards, `ShardFrameSource`.
- `check`: `check_path`, reporting every problem; `python -m harness.data check|convert`.
- `config`: `DataConfig` (configs/data/calvin.yaml), `build_dataset` (windows of a model's spec), `make_normalizer`.
- `normalization`: `ActionNormalizer`, saved with every checkpoint.
"""
