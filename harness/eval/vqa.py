"""VQA accuracy of a model or checkpoint on a vision-language set: exact match after normalisation,
per question type, beside the majority-answer baseline of each type.

    python -m harness.eval.vqa CHECKPOINT DATA [--out results.json]
    python -m harness.eval.vqa compare before=results.json after=results2.json ...   # side by side
    python -m harness.eval.vqa baseline DATA                                         # the baseline alone

DATA is a folder with val.json (evaluated) and train.json (where the majority answers come from), as
`python -m harness.data.vl generate` writes it, or one LLaVA-style JSON file (then `--train-file` names the
file for the baseline; without it the baseline is the majority of the evaluated file itself, marked so).

* `normalize_answer`: lower case, punctuation to spaces, articles (a, an, the) dropped (unless nothing else is
  left: "A" stays "a"), digits 0-10 as words, whitespace collapsed; a prediction is right when it equals the
  answer after both are normalised.
* Baseline: for each question type, always answering the type's most frequent (normalised) training
  answer. It is what a model that ignores the image can reach by knowing the question type.
* Predictions: greedy decoding with the KV cache (`VLAModel.generate_answers`), examples sorted by
  prompt length so that batches decode unpadded together.

`evaluate_vqa(model, dataset, majority)` returns the dict the CLI writes (for the trainer and experiments):

    {"n", "accuracy", "majority_accuracy", "majority_source",
     "per_type": {type: {"n", "accuracy", "majority_answer", "majority_accuracy"}},
     "mistakes": [{"id", "question", "answer", "prediction"}, ...up to `keep_mistakes`]}
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

import torch
from tqdm import tqdm

ARTICLES = {"a", "an", "the"}
DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation or articles, digits as words, single spaces. An answer of articles only keeps
    them: "A" (a multiple-choice letter) is "a", not the empty answer an empty generation would match."""
    words = re.sub(r"[^\w\s]", " ", text.lower()).split()
    words = [DIGIT_WORDS[int(w)] if w.isdigit() and int(w) <= 10 else w for w in words]
    return " ".join([w for w in words if w not in ARTICLES] or words)


def majority_answers(pairs: Iterable[tuple[str, str]]) -> dict[str, str]:
    """(question type, answer) pairs -> the most frequent normalised answer per type (ties: alphabetical)."""
    counts: dict[str, Counter] = {}
    for qtype, answer in pairs:
        counts.setdefault(qtype, Counter())[normalize_answer(answer)] += 1
    return {t: min(c.items(), key=lambda kv: (-kv[1], kv[0]))[0] for t, c in sorted(counts.items())}


def _pairs(dataset: Any) -> list[tuple[str, str]]:
    return [(ex.question_type, ex.answer) for ex in dataset.examples]


@torch.no_grad()
def predict_answers(model: Any, dataset: Any, batch_size: int = 32, max_new_tokens: int = 64,
                    progress: bool = False) -> list[str]:
    """Greedy answers of `model` (a VLAModel) for every example of `dataset` (a LlavaDataset), in order."""
    from harness.data.vl.llava import collate_vl

    device = next(model.parameters()).device
    size = dataset.image_size
    # equal prompt lengths decode together without padding: sort by the formatted prompt's length
    order = sorted(range(len(dataset)),
                   key=lambda i: (len(model.backbone.prompt_ids(dataset.examples[i].question, ((size, size),))), i))
    predictions: list[str] = [""] * len(dataset)
    was_training = model.training
    model.eval()
    try:
        for start in tqdm(range(0, len(order), batch_size), desc="vqa", unit="batch", disable=not progress):
            idx = order[start : start + batch_size]
            batch = collate_vl([dataset[i] for i in idx])
            answers = model.generate_answers(batch["images"].to(device), batch["prompts"], max_new_tokens)
            for i, answer in zip(idx, answers):
                predictions[i] = answer
    finally:
        model.train(was_training)
    return predictions


def score(dataset: Any, predictions: list[str], majority: dict[str, str], keep_mistakes: int = 20) -> dict[str, Any]:
    """Accuracy and baseline per question type of `predictions` (one per example of `dataset`)."""
    per_type: dict[str, dict[str, Any]] = {}
    mistakes = []
    for ex, pred in zip(dataset.examples, predictions):
        truth = normalize_answer(ex.answer)
        row = per_type.setdefault(ex.question_type, {"n": 0, "correct": 0, "majority_correct": 0})
        row["n"] += 1
        row["correct"] += normalize_answer(pred) == truth
        row["majority_correct"] += majority.get(ex.question_type) == truth
        if normalize_answer(pred) != truth and len(mistakes) < keep_mistakes:
            mistakes.append({"id": ex.id, "question": ex.question, "answer": ex.answer, "prediction": pred})
    n = sum(r["n"] for r in per_type.values())
    return {
        "n": n,
        "accuracy": sum(r["correct"] for r in per_type.values()) / max(n, 1),
        "majority_accuracy": sum(r["majority_correct"] for r in per_type.values()) / max(n, 1),
        "per_type": {t: {"n": r["n"], "accuracy": r["correct"] / r["n"], "majority_answer": majority.get(t),
                         "majority_accuracy": r["majority_correct"] / r["n"]} for t, r in sorted(per_type.items())},
        "mistakes": mistakes,
    }


def evaluate_vqa(model: Any, dataset: Any, majority: dict[str, str] | None = None, batch_size: int = 32,
                 max_new_tokens: int = 64, progress: bool = False) -> dict[str, Any]:
    """Score `model` on `dataset`; `majority` (from `majority_answers` over the training split) defaults to
    the evaluated set's own majority answers (marked by majority_source = "evaluated set")."""
    source = "training split" if majority is not None else "evaluated set"
    majority = majority if majority is not None else majority_answers(_pairs(dataset))
    result = score(dataset, predict_answers(model, dataset, batch_size, max_new_tokens, progress), majority)
    return {**result, "majority_source": source}


def evaluate_checkpoint(checkpoint: str | Path, data: str | Path, train_file: str | Path | None = None,
                        image_root: str | Path | None = None, device: str = "cpu", batch_size: int = 32,
                        max_new_tokens: int = 64, limit: int | None = None, progress: bool = False,
                        image_size: int = 200, skip_text_only: bool = False) -> dict[str, Any]:
    """Load a checkpoint folder and evaluate it on DATA (a generated folder or a JSON file; see the module doc).
    `image_size`, `skip_text_only`: as the training's `sources.vl.options` read the data."""
    from agents.vla.checkpoint import load_checkpoint

    dataset, train_file, majority = _evaluated_set(data, train_file, image_root, limit, image_size, skip_text_only)
    model = load_checkpoint(checkpoint, device=device).model
    result = evaluate_vqa(model, dataset, majority, batch_size, max_new_tokens, progress)
    return {"checkpoint": str(checkpoint), "data": str(dataset.path),
            "train_file": str(train_file) if train_file else None, **result}


def majority_baseline(data: str | Path, train_file: str | Path | None = None, image_root: str | Path | None = None,
                      limit: int | None = None, skip_text_only: bool = False) -> dict[str, Any]:
    """The baseline alone: each question answered with its type's majority answer (no model)."""
    dataset, train_file, majority = _evaluated_set(data, train_file, image_root, limit, skip_text_only=skip_text_only)
    source = "training split" if majority is not None else "evaluated set"
    majority = majority if majority is not None else majority_answers(_pairs(dataset))
    result = score(dataset, [majority.get(ex.question_type, "") for ex in dataset.examples], majority, keep_mistakes=0)
    return {"data": str(dataset.path), "train_file": str(train_file) if train_file else None, **result,
            "majority_source": source}


def _evaluated_set(data: str | Path, train_file: str | Path | None, image_root: str | Path | None,
                   limit: int | None, image_size: int = 200,
                   skip_text_only: bool = False) -> tuple[Any, Path | None, dict[str, str] | None]:
    """DATA's evaluated examples (val.json of a generated folder, or the file), the training file and its majority
    answers (None without one)."""
    from harness.data.vl.llava import LlavaDataset

    data = Path(data)
    eval_file = data / "val.json" if data.is_dir() else data
    if train_file is None and data.is_dir() and (data / "train.json").is_file():
        train_file = data / "train.json"
    dataset = LlavaDataset(eval_file, image_root, image_size, skip_text_only)
    if limit is not None:
        dataset.examples = dataset.examples[:limit]
    train_set = LlavaDataset(train_file, image_root, image_size, skip_text_only) if train_file else None
    majority = majority_answers(_pairs(train_set)) if train_set is not None else None
    return dataset, Path(train_file) if train_file else None, majority


def format_table(result: dict[str, Any], model: bool = True) -> str:
    """Per question type: n, the model's accuracy (not for `model=False`: the baseline alone), the baseline."""
    def row(name: str, r: dict[str, Any], answer: str) -> str:
        accuracy = f" {r['accuracy']:>9.3f}" if model else ""
        return f"{name:<18} {r['n']:>6}{accuracy} {r['majority_accuracy']:>9.3f}  {answer}"

    head = f" {'accuracy':>9}" if model else ""
    lines = [f"{'question type':<18} {'n':>6}{head} {'majority':>9}  majority answer"]
    for t, r in result["per_type"].items():
        answer = r["majority_answer"] or "-"
        lines.append(row(t or "(none)", r, answer[:40] + ("..." if len(answer) > 40 else "")))
    lines.append(row("all", result, f"(baseline from the {result['majority_source']})"))
    return "\n".join(lines)


def format_comparison(results: dict[str, dict[str, Any]]) -> str:
    """Accuracy per question type of several evaluations of the same questions (e.g. before and after
    action fine-tuning), side by side with the majority baseline."""
    names = list(results)
    first = results[names[0]]
    for name, r in results.items():
        if r["n"] != first["n"] or r.get("data") != first.get("data"):
            raise ValueError(f"{name}: {r['n']} questions of {r.get('data')}, not the {first['n']} of "
                             f"{first.get('data')} that {names[0]} answered: not comparable")
    width = max(9, *(len(n) for n in names))
    lines = [f"{'question type':<18} {'n':>6} {'majority':>9} " + " ".join(f"{n:>{width}}" for n in names)]
    for t, base in first["per_type"].items():
        row = " ".join(f"{results[n]['per_type'][t]['accuracy']:>{width}.3f}" for n in names)
        lines.append(f"{t or '(none)':<18} {base['n']:>6} {base['majority_accuracy']:>9.3f} {row}")
    row = " ".join(f"{results[n]['accuracy']:>{width}.3f}" for n in names)
    lines.append(f"{'all':<18} {first['n']:>6} {first['majority_accuracy']:>9.3f} {row}")
    return "\n".join(lines)


def baseline_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.eval.vqa baseline",
                                 description="the majority-answer baseline per question type, no model")
    ap.add_argument("data", help="generated VL folder (val.json + train.json) or a LLaVA-style JSON file")
    ap.add_argument("--train-file", help="LLaVA-style JSON for the majority answers (default: DATA/train.json)")
    ap.add_argument("--image-root", help="folder image paths are relative to (default: each JSON file's folder)")
    ap.add_argument("--skip-text-only", action="store_true", help="leave out entries without an image")
    args = ap.parse_args(argv)
    print(format_table(majority_baseline(args.data, args.train_file, args.image_root,
                                         skip_text_only=args.skip_text_only), model=False))
    return 0


def compare_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.eval.vqa compare",
                                 description="side by side: results files that --out wrote, as NAME=FILE")
    ap.add_argument("results", nargs="+", metavar="NAME=FILE")
    args = ap.parse_args(argv)
    results = {}
    for item in args.results:
        name, sep, path = item.partition("=")
        if not sep:
            ap.error(f"{item}: expected NAME=FILE")
        results[name] = json.loads(Path(path).read_text())
    print(format_comparison(results))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["compare"]:
        return compare_main(argv[1:])
    if argv[:1] == ["baseline"]:
        return baseline_main(argv[1:])
    ap = argparse.ArgumentParser(prog="python -m harness.eval.vqa", description=__doc__.split("\n\n")[0],
                                 epilog="also: `python -m harness.eval.vqa baseline DATA` (the majority baseline "
                                 "alone) and `python -m harness.eval.vqa compare NAME=FILE ...` (side by side)")
    ap.add_argument("checkpoint", help="checkpoint folder (agents.vla.checkpoint)")
    ap.add_argument("data", help="generated VL folder (val.json + train.json) or a LLaVA-style JSON file")
    ap.add_argument("--train-file", help="LLaVA-style JSON for the majority baseline (default: DATA/train.json)")
    ap.add_argument("--image-root", help="folder image paths are relative to (default: each JSON file's folder)")
    ap.add_argument("--out", help="write the result dict as JSON here")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--limit", type=int, help="evaluate only the first N examples")
    ap.add_argument("--image-size", type=int, default=200, help="the square side images are padded and resized to: "
                    "the training's sources.vl.options.image_size (default: 200, the sim data's)")
    ap.add_argument("--skip-text-only", action="store_true", help="leave out entries without an image (as "
                    "sources.vl.options.skip_text_only)")
    args = ap.parse_args(argv)
    if args.image_size < 1:
        ap.error(f"--image-size must be >= 1, got {args.image_size}")
    result = evaluate_checkpoint(args.checkpoint, args.data, args.train_file, args.image_root, args.device,
                                 args.batch_size, args.max_new_tokens, args.limit, progress=sys.stderr.isatty(),
                                 image_size=args.image_size, skip_text_only=args.skip_text_only)
    print(format_table(result))
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
