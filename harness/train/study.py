"""The structure study: which structure of a VLA matters, each row trained under the same CPU budget on the same data.

    python -m harness.train.study runs/e2e/shards_D runs/study --budget-cpu-s 300 --episodes 5 --chains 100
    scripts/structure_study.sh ...                   # the same in the project's venv (vla-harness-study)
    ... --rows decoder_policy_head scratch_policy_head    # some of the rows
    ... --overrides trainer.batch_size=4                  # training overrides for every row, after the recipe

Rows (`ROWS`) differ from the end-to-end recipe (configs/experiment/e2e_cpu.yaml: tiny Idefics3, the LSTM policy
head over 8 frames, continuous actions) only in what the row names, as RoboVLMs' comparison has them:

* the backbone's structure: decoder-only VLM (tiny_idefics3: image tokens in the LM's sequence), cross-attention
  VLM (tiny_mllama: gated cross-attention layers read the image features), no VLM (scratch: CNN + word
  embeddings + GRU, trained from scratch);
* the history: one-step (one frame, an MLP head), interleaved (the window's frames in one LM sequence, an MLP
  head: the history is the LM's), policy head (one LM pass per frame, an LSTM over the window);
* the action head: continuous (smooth-L1 + BCE) or discrete (256-bin action tokens decoded by the LM).

Each row trains in STUDY_DIR/rows/<row>/train until its training steps have used the CPU budget
(`trainer.max_cpu_s`: this process's CPU seconds, which contention on a shared machine inflates far less than
wall time; one torch thread, so no spinning thread is billed, and no DataLoader worker, so data loading is
billed too). The schedule stays the recipe's (12000 steps, cosine): every row stops on the same schedule
after the same CPU. Then its last checkpoint is evaluated by harness.eval: single-task success on the
recording's 8 tasks (`--episodes` per task) and CALVIN's first `--chains` chains, with their 95 % intervals.

STUDY_DIR/study.md and study.csv are regenerated from the rows' files after every row. The same command again
skips finished rows (trained, and evaluated with as many episodes and chains), resumes an interrupted one
(training from its last checkpoint with the CPU seconds it had spent; an evaluation from its finished
episodes), and refuses settings that would make the rows incomparable (another dataset, budget, recipe
override, a setting the recipe resolves to, scene, or a row's definition changed): STUDY_DIR/study.json holds
them. More episodes or chains
extend every row's evaluation.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Sequence

from harness.config_errors import ConfigError, exit_on_config_error
from harness.durable_files import atomic_write_text
from harness.tool_args import several
from harness.train.tables import fmt, interval_text, markdown_table, write_csv

RECIPE = "+experiment=e2e_cpu"
TASKS = ("open_drawer", "close_drawer", "move_slider_left", "move_slider_right", "turn_on_led", "turn_off_led",
         "turn_on_lightbulb", "turn_off_lightbulb")  # the e2e recording's tasks (scripts/e2e_cpu.sh)
# the same for every row: bookkeeping, not the model's training (see the module's docstring)
BOOKKEEPING = ("trainer.num_workers=0", "trainer.progress=false", "trainer.ckpt_every=100", "trainer.keep_last=1")
SETTINGS, CSV, MARKDOWN, ROW_DONE = "study.json", "study.csv", "study.md", "row.json"


@dataclass(frozen=True)
class StudyRow:
    name: str
    backbone: str  # the model preset
    structure: str  # how vision meets language
    history: str
    head: str
    overrides: tuple[str, ...] = ()  # what makes this row differ from the recipe


ROWS = (
    StudyRow("decoder_policy_head", "tiny_idefics3", "decoder-only VLM", "policy head", "continuous (LSTM)"),
    StudyRow("cross_attention_policy_head", "tiny_mllama", "cross-attention VLM", "policy head", "continuous (LSTM)",
             ("model=tiny_mllama",)),
    StudyRow("scratch_policy_head", "scratch", "no VLM (from scratch)", "policy head", "continuous (LSTM)",
             ("model=scratch",)),
    StudyRow("decoder_one_step", "tiny_idefics3", "decoder-only VLM", "one-step", "continuous (MLP)",
             ("model.window_size=1", "model.head.type=mlp")),
    StudyRow("decoder_interleaved", "tiny_idefics3", "decoder-only VLM", "interleaved", "continuous (MLP)",
             ("model.history=interleaved", "model.head.type=mlp")),
    StudyRow("decoder_one_step_discrete", "tiny_idefics3", "decoder-only VLM", "one-step", "discrete",
             ("model.window_size=1", "model.head.type=discrete")),
)
ROWS_BY_NAME = {r.name: r for r in ROWS}


class StudyError(ConfigError):
    """Settings that cannot run, or that would make the study's rows incomparable."""


@dataclass(frozen=True)
class StudySettings:
    data: str  # the dataset every row trains on (read only)
    out: str  # STUDY_DIR
    budget_cpu_s: float  # per row
    episodes_per_task: int = 10
    num_chains: int = 1000
    rows: tuple[str, ...] = tuple(r.name for r in ROWS)
    overrides: tuple[str, ...] = ()  # applied to every row after the recipe (e.g. smaller models in tests)
    scene: str = "D"
    ep_len: int = 360  # steps per subtask (CALVIN's 360; tests shorten it)
    workers: int = 2  # evaluation workers
    threads: int = 1  # torch threads while training

    def __post_init__(self) -> None:
        if not self.budget_cpu_s > 0:
            raise StudyError(f"--budget-cpu-s must be > 0, got {self.budget_cpu_s}")
        if min(self.episodes_per_task, self.num_chains, self.ep_len, self.threads) < 1 or self.workers < 0:
            raise StudyError("--episodes, --chains, --ep-len and --threads must be >= 1 and --workers >= 0; got "
                             f"{self.episodes_per_task}, {self.num_chains}, {self.ep_len}, {self.threads}, {self.workers}")
        unknown = [r for r in self.rows if r not in ROWS_BY_NAME]
        if unknown or not self.rows:
            raise StudyError(f"--rows: unknown row(s) {unknown or '(none given)'}; the rows are {list(ROWS_BY_NAME)}")

    def comparable(self, data_digest: str) -> dict[str, Any]:
        """What every row's numbers depend on (besides its own definition): study.json's `comparable`."""
        return {"data": str(Path(self.data).resolve()), "data_digest": data_digest, "budget_cpu_s": self.budget_cpu_s,
                "threads": self.threads, "recipe": [RECIPE, *BOOKKEEPING], "overrides": list(self.overrides),
                "scene": self.scene, "ep_len": self.ep_len, "tasks": list(TASKS)}


# ----------------------------------------------------------------------------------------- the data
INDEX_FILES = ("manifest.json", "annotations.json", "statistics.yaml", "ep_start_end_ids.npy",
               "lang_annotations/auto_lang_ann.npy", "scene_info.npy")


def data_digest(path: Path) -> str:
    """sha256 of the dataset's index files (shards: each split's manifest and annotations, which name every frame
    run, shard and annotation; CALVIN format: episode ids, language annotations), not of the frames' bytes."""
    h = hashlib.sha256()
    found = 0
    for split in ("training", "validation"):
        for name in INDEX_FILES:
            f = path / split / name
            if f.is_file():
                h.update(f"{split}/{name}\0".encode() + f.read_bytes())
                found += 1
    if not found:
        raise StudyError(f"--data {path}: no training/ or validation/ split with a dataset's index files "
                         f"({', '.join(INDEX_FILES)}); give a recording converted to shards or a CALVIN-format dataset")
    return h.hexdigest()


def recipe_config(overrides: Sequence[str]) -> dict[str, Any]:
    """Every setting the rows train with before their own overrides, flattened (`optim.lr` -> value): the recipe's
    yaml files resolved, so that an edit of them is seen, not only their name."""
    from harness.train.config import TrainConfig, compose_config

    composed = compose_config([RECIPE, "data.path=DATA", "run_name=ROW", "output_dir=ROW", *BOOKKEEPING, *overrides])
    return json.loads(json.dumps(_flat(TrainConfig.from_dict(composed).to_dict())))


def _flat(tree: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        out.update(_flat(value, f"{prefix}{key}.") if isinstance(value, dict) and value else {f"{prefix}{key}": value})
    return out


def claim(settings: StudySettings) -> dict[str, Any]:
    """Check the settings against STUDY_DIR/study.json (written on first use); returns the study's record."""
    data = Path(settings.data)
    if not data.is_dir():
        raise StudyError(f"--data {data}: no such folder")
    comparable = settings.comparable(data_digest(data))
    rows = {name: list(ROWS_BY_NAME[name].overrides) for name in settings.rows}
    recipe = recipe_config(settings.overrides)
    path = Path(settings.out) / SETTINGS
    record = json.loads(path.read_text()) if path.is_file() else {"comparable": comparable, "rows": {}}
    changed = [f"{k}: {record['comparable'].get(k)!r} -> {v!r}" for k, v in comparable.items() if record["comparable"].get(k) != v]
    changed += [f"row {name}: {record['rows'][name]!r} -> {o!r}" for name, o in rows.items()
                if name in record["rows"] and record["rows"][name] != o]
    old_recipe = record.get("recipe", recipe)  # a study from before the recipe was recorded: taken as it is now
    changed += [f"recipe {k}: {old_recipe.get(k)!r} -> {recipe.get(k)!r}"
                for k in sorted(set(old_recipe) | set(recipe)) if old_recipe.get(k) != recipe.get(k)][:5]
    record["recipe"] = recipe
    if changed:
        raise StudyError(f"{path}: the study there ran with other settings, which would make its rows incomparable "
                         f"({'; '.join(changed)}); use another output folder, or the same settings")
    record["rows"].update(rows)
    record["readable"] = {"data": settings.data, "recording": _recording(data)}
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(record, indent=1) + "\n")
    return record


def _recording(data: Path) -> dict[str, Any] | None:
    """The recorder's recording.json, when the dataset folder has one (a recording, not its shards)."""
    f = data / "recording.json"
    return json.loads(f.read_text()) if f.is_file() else None


# ----------------------------------------------------------------------------------------- one row
def row_dir(settings: StudySettings, name: str) -> Path:
    return Path(settings.out) / "rows" / name


def train_row(settings: StudySettings, row: StudyRow) -> dict[str, Any]:
    """Train the row (or resume it; a trained row returns its summary at once)."""
    import torch

    from harness.config_errors import config_errors
    from harness.train.config import TrainConfig, compose_config
    from harness.train.trainer import SUMMARY, train

    out = row_dir(settings, row.name) / "train"
    if (out / SUMMARY).is_file():
        return json.loads((out / SUMMARY).read_text())
    overrides = [RECIPE, f"data.path={Path(settings.data).resolve()}", f"run_name={row.name}", f"output_dir={out.resolve()}",
                 f"trainer.max_cpu_s={settings.budget_cpu_s}", *BOOKKEEPING, *row.overrides, *settings.overrides]
    torch.set_num_threads(settings.threads)
    with config_errors():
        cfg = TrainConfig.from_dict(compose_config(overrides))
    return train(cfg, overrides=overrides)


def eval_settings(settings: StudySettings, mode: str) -> Any:
    from harness.eval.config import EvalSettings

    return EvalSettings(mode=mode, tasks=TASKS, episodes_per_task=settings.episodes_per_task,
                        num_chains=settings.num_chains, ep_len=settings.ep_len, workers=settings.workers, progress=False, videos=0,
                        video_failures=0)


def evaluate_row(settings: StudySettings, row: StudyRow, summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Single-task and chain results of the row's last checkpoint (resumed or extended by harness.eval)."""
    from harness.train.curve import evaluate_checkpoint

    results = {}
    for mode in ("single_task", "chains"):
        out = row_dir(settings, row.name) / f"eval_{mode}"
        done = out / "results.json"
        if done.is_file() and _evaluated(json.loads(done.read_text()), settings, mode):
            results[mode] = json.loads(done.read_text())
        else:
            results[mode] = evaluate_checkpoint(Path(summary["last_checkpoint"]), out, eval_settings(settings, mode),
                                                settings.scene)
    return results


def _evaluated(results: dict[str, Any], settings: StudySettings, mode: str) -> bool:
    if mode == "chains":
        return results.get("num_chains") == settings.num_chains
    return results.get("episodes") == settings.episodes_per_task * len(TASKS)


def run_row(settings: StudySettings, row: StudyRow) -> dict[str, Any]:
    """Train and evaluate one row; STUDY_DIR/rows/<row>/row.json holds its numbers once both are done."""
    started = time.perf_counter()
    summary = train_row(settings, row)
    results = evaluate_row(settings, row, summary)
    numbers = row_numbers(row, summary, results)
    numbers["row_wall_s_this_run"] = round(time.perf_counter() - started, 1)
    atomic_write_text(row_dir(settings, row.name) / ROW_DONE, json.dumps(numbers, indent=1) + "\n")
    return numbers


def row_numbers(row: StudyRow, summary: dict[str, Any], results: dict[str, dict[str, Any]]) -> dict[str, Any]:
    single, chains = results["single_task"], results["chains"]
    st_ci, len_ci = single["intervals"]["success_rate"] or {}, chains["intervals"]["avg_seq_len"] or {}
    return {
        **{k: v for k, v in asdict(row).items() if k != "overrides"}, "overrides": " ".join(row.overrides) or "(recipe)",
        "status": "done",
        "params_trainable": summary["parameters"]["trainable"], "params_total": summary["parameters"]["total"],
        "steps": summary["steps"], "stopped_by": summary["stopped_by"], "train_cpu_s": summary["train_cpu_s"],
        "train_wall_s": summary["train_wall_s"], "val_loss": summary["val_loss"],
        "single_task_success": single["success_rate"], "single_task_low": st_ci.get("low"),
        "single_task_high": st_ci.get("high"), "single_task_episodes": single["episodes"],
        **{f"{t}_rate": single["tasks"][t]["rate"] for t in TASKS if t in single["tasks"]},
        "avg_len": chains["avg_seq_len"], "avg_len_low": len_ci.get("low"), "avg_len_high": len_ci.get("high"),
        "chains": chains["num_chains"], **{f"chain_sr_{k}": v for k, v in chains["chain_sr"].items()},
    }


# ----------------------------------------------------------------------------------------- the table
def collect(settings: StudySettings) -> list[dict[str, Any]]:
    """The settings' rows and every row finished before (a run with --rows adds to the table, it does not cut
    it), in ROWS order: a finished row's numbers, else its name and status."""
    rows = []
    for name in (r.name for r in ROWS if r.name in settings.rows or (row_dir(settings, r.name) / ROW_DONE).is_file()):
        done = row_dir(settings, name) / ROW_DONE
        if done.is_file():
            numbers = json.loads(done.read_text())
            if not _row_evaluated(numbers, settings):  # evaluated before with other sizes: extended when it runs
                numbers["status"] = f"evaluated on {numbers['single_task_episodes']} episodes, {numbers['chains']} chains"
            rows.append(numbers)
        else:
            row = ROWS_BY_NAME[name]
            rows.append({**{k: v for k, v in asdict(row).items() if k != "overrides"},
                         "overrides": " ".join(row.overrides) or "(recipe)", "status": "not finished"})
    return rows


CSV_COLUMNS = ("name", "backbone", "structure", "history", "head", "overrides", "status", "params_trainable",
               "params_total", "steps", "stopped_by", "train_cpu_s", "train_wall_s", "val_loss", "single_task_success",
               "single_task_low", "single_task_high", "single_task_episodes", *(f"{t}_rate" for t in TASKS), "avg_len",
               "avg_len_low", "avg_len_high", "chains", *(f"chain_sr_{i}" for i in range(1, 6)))


def _params(r: dict[str, Any]) -> str:
    if r.get("params_total") is None:
        return "-"
    return f"{r['params_trainable'] / 1e6:.2f}M / {r['params_total'] / 1e6:.2f}M"


def _markdown_cells(r: dict[str, Any]) -> list[str]:
    return [r["name"], r["structure"], r["history"], r["head"], _params(r), fmt(r.get("steps")),
            f"{fmt(r.get('train_cpu_s'))} / {fmt(r.get('train_wall_s'))}", fmt(r.get("val_loss")),
            interval_text(r.get("single_task_success"), r.get("single_task_low"), r.get("single_task_high")),
            interval_text(r.get("avg_len"), r.get("avg_len_low"), r.get("avg_len_high")), r["status"]]


def write_study_table(settings: StudySettings, command: str) -> Path:
    """STUDY_DIR/study.csv (every column) and study.md (the table and what it ran on); returns the Markdown file."""
    folder = Path(settings.out)
    record = json.loads((folder / SETTINGS).read_text())
    rows = collect(settings)
    write_csv(folder / CSV, CSV_COLUMNS, [[r.get(c) for c in CSV_COLUMNS] for r in rows])
    c = record["comparable"]
    lines = [f"# Structure study {folder}", "", f"`{command}`", "",
             f"* data: `{c['data']}` (index sha256 `{c['data_digest'][:16]}`)",
             f"* budget per row: {c['budget_cpu_s']:g} CPU seconds of training steps ({c['threads']} torch thread(s)); "
             f"recipe `{' '.join(c['recipe'])}`" + (f", for every row `{' '.join(c['overrides'])}`" if c["overrides"] else ""),
             f"* evaluation: the last checkpoint, scene {c['scene']}, {c['ep_len']} steps per subtask; single-task success over the {len(TASKS)} tasks x "
             f"{settings.episodes_per_task} episodes (Wilson 95 %), CALVIN's first {settings.num_chains} chains: "
             "avg. len (BCa bootstrap 95 %)", ""]
    columns = ["row", "VLM structure", "history", "action head", "trainable / total params", "steps",
               "train CPU s / wall s", "val loss", "single-task success", "avg. len", "status"]
    lines += markdown_table(columns, [_markdown_cells(r) for r in rows])
    path = folder / MARKDOWN
    path.write_text("\n".join(lines) + "\n")
    return path


def run_study(settings: StudySettings, command: str) -> list[dict[str, Any]]:
    """Every selected row not yet done, in ROWS order, the table rewritten after each."""
    claim(settings)
    for row in (r for r in ROWS if r.name in settings.rows):
        done = row_dir(settings, row.name) / ROW_DONE
        if done.is_file() and _row_evaluated(json.loads(done.read_text()), settings):
            print(f"{row.name}: done", flush=True)
            continue
        print(f"{row.name}: training and evaluating ({' '.join(row.overrides) or 'the recipe'})", flush=True)
        numbers = run_row(settings, row)
        print(f"{row.name}: {numbers['steps']} steps in {numbers['train_cpu_s']:.0f} CPU s, single-task "
              f"{numbers['single_task_success']:.3f}, avg. len {numbers['avg_len']:.3f}", flush=True)
        write_study_table(settings, command)
    write_study_table(settings, command)
    return collect(settings)


def _row_evaluated(numbers: dict[str, Any], settings: StudySettings) -> bool:
    return (numbers["chains"] == settings.num_chains
            and numbers["single_task_episodes"] == settings.episodes_per_task * len(TASKS))


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(prog="python -m harness.train.study", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", help="the dataset every row trains on (the e2e recording's shards)")
    ap.add_argument("out", help="STUDY_DIR: rows/<row>/, study.json, study.md, study.csv")
    ap.add_argument("--budget-cpu-s", type=float, required=True, help="CPU seconds of training steps per row")
    ap.add_argument("--episodes", type=int, default=StudySettings.episodes_per_task, help="single-task episodes per task")
    ap.add_argument("--chains", type=int, default=StudySettings.num_chains, help="CALVIN's first N chains")
    ap.add_argument("--rows", nargs="+", help=f"the rows to run (default: all): {', '.join(ROWS_BY_NAME)}")
    ap.add_argument("--scene", default=StudySettings.scene, help="the evaluation's scene (the recording's)")
    ap.add_argument("--ep-len", type=int, default=StudySettings.ep_len, help="steps per subtask (CALVIN: 360)")
    ap.add_argument("--workers", type=int, default=StudySettings.workers, help="evaluation worker processes")
    ap.add_argument("--threads", type=int, default=StudySettings.threads, help="torch threads while training")
    ap.add_argument("--overrides", nargs="+", default=[], help="training overrides for every row, after the recipe (key=value)")
    args = ap.parse_args(argv)
    with exit_on_config_error("harness.train.study"):
        settings = StudySettings(
            data=args.data, out=args.out, budget_cpu_s=args.budget_cpu_s, episodes_per_task=args.episodes,
            num_chains=args.chains, rows=several(args.rows) or StudySettings.rows,
            overrides=tuple(args.overrides), scene=args.scene, ep_len=args.ep_len, workers=args.workers, threads=args.threads)
        started = time.perf_counter()
        run_study(settings, "python -m harness.train.study " + shlex.join(argv))
    print((Path(settings.out) / MARKDOWN).read_text(), end="")
    print(f"\nwall time of this run: {time.perf_counter() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
