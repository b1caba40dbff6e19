"""VQA evaluation: answer normalisation, majority baselines, scoring, and the CLI on a real checkpoint."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from agents.vla.checkpoint import save_checkpoint
from agents.vla.config import BackboneConfig, HeadConfig, VLAConfig
from agents.vla.model import VLAModel
from harness.data.normalization import ActionNormalizer
from harness.data.vl.generate import generate
from harness.data.vl.llava import LlavaDataset
from harness.eval.vqa import evaluate_vqa, main, majority_answers, normalize_answer, score

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def sim_data(tmp_path_factory):
    out = tmp_path_factory.mktemp("vl") / "sim"
    generate(out, num_states=6, seed=11, scenes="D", val_fraction=0.34)
    return out


def test_normalize_answer():
    assert normalize_answer("The pink block.") == normalize_answer("pink block") == "pink block"
    assert normalize_answer(" Yes! ") == "yes"
    assert normalize_answer("2") == normalize_answer("two") == "two"
    assert normalize_answer("the red block, the blue block and the pink block") == "red block blue block and pink block"
    assert normalize_answer("left") != normalize_answer("right")
    # a multiple-choice letter that is an article: kept, so an empty or "The" generation does not match it
    assert normalize_answer("A") == normalize_answer("(A).") == "a" and normalize_answer("") == ""
    assert normalize_answer("The") != normalize_answer("A") and normalize_answer("a.") == "a"


def test_majority_answers_per_type():
    pairs = [("drawer", "yes"), ("drawer", "No"), ("drawer", "no."), ("count", "two"), ("count", "one")]
    assert majority_answers(pairs) == {"count": "one", "drawer": "no"}  # ties: alphabetical


class Oracle(nn.Module):
    """Answers every question right, looking the answer up by (question, image): shows that predictions
    are scored against their own examples after the evaluation reorders them by prompt length."""

    def __init__(self, dataset: LlavaDataset, model: VLAModel):
        super().__init__()
        self.backbone = model.backbone
        self.weight = nn.Parameter(torch.zeros(1))
        self.truth = {(ex.question, dataset[i]["image"].tobytes()): ex.answer for i, ex in enumerate(dataset.examples)}

    def generate_answers(self, images, prompts, max_new_tokens):
        return [self.truth[(p, im.numpy().tobytes())].upper() + "." for p, im in zip(prompts, images)]


def test_scores_per_type_against_the_training_majority(sim_data):
    train, val = LlavaDataset(sim_data / "train.json"), LlavaDataset(sim_data / "val.json")
    majority = majority_answers((ex.question_type, ex.answer) for ex in train.examples)
    model = VLAModel.build(VLAConfig(backbone=BackboneConfig(family="llava", tiny="tiny_llava")), verbose=False)
    result = evaluate_vqa(Oracle(val, model), val, majority, batch_size=4)
    assert result["accuracy"] == 1.0 and result["n"] == len(val) and result["majority_source"] == "training split"
    assert sum(r["n"] for r in result["per_type"].values()) == len(val) and not result["mistakes"]
    for qtype, row in result["per_type"].items():
        truths = [normalize_answer(ex.answer) for ex in val.examples if ex.question_type == qtype]
        assert row["majority_answer"] == majority[qtype]
        assert row["majority_accuracy"] == sum(t == majority[qtype] for t in truths) / len(truths)
    wrong = score(val, ["no idea"] * len(val), majority)
    assert wrong["accuracy"] == 0.0 and len(wrong["mistakes"]) == min(20, len(val))
    assert wrong["majority_accuracy"] == result["majority_accuracy"]


def test_the_baseline_alone_needs_no_model(sim_data, capsys):
    train, val = LlavaDataset(sim_data / "train.json"), LlavaDataset(sim_data / "val.json")
    majority = majority_answers((ex.question_type, ex.answer) for ex in train.examples)
    assert main(["baseline", str(sim_data)]) == 0
    table = capsys.readouterr().out.splitlines()
    right = sum(normalize_answer(ex.answer) == majority[ex.question_type] for ex in val.examples)
    assert table[-1].split()[:3] == ["all", str(len(val)), f"{right / len(val):.3f}"]
    assert "baseline from the training split" in table[-1] and "accuracy" not in table[0]
    rows = {line.split()[0]: line.split() for line in table[1:-1]}
    assert set(rows) == {ex.question_type for ex in val.examples}
    for qtype, row in rows.items():
        truths = [normalize_answer(ex.answer) for ex in val.examples if ex.question_type == qtype]
        assert row[1:3] == [str(len(truths)), f"{sum(t == majority[qtype] for t in truths) / len(truths):.3f}"]


def test_the_cli_reads_images_at_the_size_the_model_was_trained_at(sim_data, tmp_path, monkeypatch, capsys):
    import harness.eval.vqa as vqa

    seen = []

    def fake_evaluate(model, dataset, majority, *args, **kwargs):
        seen.append(dataset[0]["image"].shape)
        return {**score(dataset, [""] * len(dataset), majority), "majority_source": "training split"}

    torch.manual_seed(0)
    cfg = VLAConfig(backbone=BackboneConfig(family="llava", tiny="tiny_llava", tiny_size={"hidden": 64, "vision_hidden": 32}),
                    head=HeadConfig(type="mlp", hidden_size=16))
    save_checkpoint(tmp_path / "ckpt", VLAModel.build(cfg, verbose=False), ActionNormalizer())
    monkeypatch.setattr(vqa, "evaluate_vqa", fake_evaluate)
    assert main([str(tmp_path / "ckpt"), str(sim_data), "--limit", "2"]) == 0
    assert main([str(tmp_path / "ckpt"), str(sim_data), "--limit", "2", "--image-size", "64"]) == 0
    assert seen == [(200, 200, 3), (64, 64, 3)]
    capsys.readouterr()


def test_cli_on_a_checkpoint(sim_data, tmp_path, capsys):
    torch.manual_seed(0)
    cfg = VLAConfig(backbone=BackboneConfig(family="llava", tiny="tiny_llava", tiny_size={"hidden": 64, "vision_hidden": 32}),
                    head=HeadConfig(type="mlp", hidden_size=16))
    save_checkpoint(tmp_path / "ckpt", VLAModel.build(cfg, verbose=False), ActionNormalizer())
    out = tmp_path / "results.json"
    assert main([str(tmp_path / "ckpt"), str(sim_data), "--out", str(out), "--max-new-tokens", "3", "--limit", "12"]) == 0
    printed = capsys.readouterr().out
    assert "question type" in printed and "majority" in printed and "baseline from the training split" in printed
    result = json.loads(out.read_text())
    assert result["n"] == 12 and 0 <= result["accuracy"] <= 1 and result["train_file"].endswith("train.json")
    assert set(result["per_type"]) <= {"drawer", "door", "green_light", "yellow_light", "block_on_surface",
                                       "block_place", "left_right", "count_table", "caption"}

    # two evaluations of the same questions side by side; other questions are refused
    other = dict(result, per_type={t: dict(r, accuracy=1.0) for t, r in result["per_type"].items()}, accuracy=1.0)
    (tmp_path / "other.json").write_text(json.dumps(other))
    assert main(["compare", f"before={out}", f"after={tmp_path / 'other.json'}"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0].split()[-2:] == ["before", "after"]
    assert table[-1].split()[:2] == ["all", "12"] and table[-1].split()[-1] == "1.000"
    (tmp_path / "fewer.json").write_text(json.dumps(dict(result, n=5)))
    with pytest.raises(ValueError, match="not comparable"):
        main(["compare", f"a={out}", f"b={tmp_path / 'fewer.json'}"])
