"""The vision-language loss (answer tokens only) and greedy answer generation, on the tiny backbones."""

from __future__ import annotations

import pytest
import torch

from agents.vla.checkpoint import load_checkpoint, save_checkpoint
from agents.vla.config import BackboneConfig, HeadConfig, VLAConfig
from agents.vla.model import IGNORE_INDEX, VLAModel, answer_cross_entropy
from agents.vla.tiny import TINY_PRESETS
from harness.data.normalization import ActionNormalizer

torch.set_num_threads(1)

FAMILIES = ["tiny_llava", "tiny_paligemma", "tiny_idefics3", "tiny_qwen2_vl"]
PROMPTS = ["Is the drawer open?", "Which block is to the left of the red block?", "Is the LED on?"]
ANSWERS = ["yes", "the blue block and the pink block", "no"]


def build(name: str, seed: int = 0, **size: int) -> VLAModel:
    torch.manual_seed(seed)
    cfg = VLAConfig(backbone=BackboneConfig(family=TINY_PRESETS[name].family, tiny=name, tiny_size=size),
                    head=HeadConfig(type="mlp", hidden_size=32))
    return VLAModel.build(cfg, verbose=False)


@pytest.fixture(scope="module")
def models():
    cache: dict[str, VLAModel] = {}

    def get(name: str) -> VLAModel:
        if name not in cache:
            cache[name] = build(name).eval()
        return cache[name]

    return get


def images(n: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 256, (n, 200, 200, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", FAMILIES)
def test_labels_mask_everything_but_the_answer(models, name):
    model = models(name)
    bb = model.backbone
    tokens = model.vl_tokens(((200, 200),), PROMPTS, ANSWERS)
    for i, (prompt, answer) in enumerate(zip(PROMPTS, ANSWERS)):
        start = len(bb.prompt_ids(prompt, ((200, 200),)))
        answer_ids = bb.answer_ids(answer)
        end = start + len(answer_ids)
        labels = tokens.labels[i]
        assert (labels[:start] == IGNORE_INDEX).all() and (labels[end:] == IGNORE_INDEX).all()  # prompt, padding
        assert labels[start:end].tolist() == answer_ids == tokens.input_ids[i, start:end].tolist()
        assert answer_ids[-1] == bb.end_of_turn_id
        assert bb.tokenizer.decode(answer_ids[:-1]).strip() == answer
        assert int(tokens.attention_mask[i].sum()) == end
        if bb.prefix_lm:  # PaliGemma: images + prompt bidirectional, the answer causal
            assert tokens.prefix_mask[i].tolist() == [t < start for t in range(labels.numel())]
    assert model.backbone.prefix_lm == (tokens.prefix_mask is not None)


@pytest.mark.parametrize("name", FAMILIES)
def test_loss_is_the_cross_entropy_of_the_answer_tokens(models, name):
    model = models(name)
    bb = model.backbone
    ims = images()
    loss = model.vl_loss(ims, PROMPTS, ANSWERS)
    tokens = model.vl_tokens(((200, 200),), PROMPTS, ANSWERS)
    with torch.no_grad():  # all logits, then the answer positions picked by hand
        hidden = bb.forward(tokens.input_ids, tokens.attention_mask, bb.pixel_inputs([ims]), tokens.prefix_mask)
        logp = bb.lm_head(hidden).float().log_softmax(-1)
    terms = []
    for i, (prompt, answer) in enumerate(zip(PROMPTS, ANSWERS)):
        start = len(bb.prompt_ids(prompt, ((200, 200),)))
        for k, token in enumerate(bb.answer_ids(answer)):
            terms.append(-logp[i, start + k - 1, token])  # the state before a token predicts it
    torch.testing.assert_close(loss, torch.stack(terms).mean(), rtol=1e-4, atol=1e-5)


def test_loss_matches_transformers_own_loss_with_these_labels(models):
    model = models("tiny_llava")
    ims = images()
    tokens = model.vl_tokens(((200, 200),), PROMPTS, ANSWERS)
    out = model.vlm(input_ids=tokens.input_ids, attention_mask=tokens.attention_mask, labels=tokens.labels,
                    **model.backbone.pixel_inputs([ims]))
    torch.testing.assert_close(model.vl_loss(ims, PROMPTS, ANSWERS), out.loss, rtol=1e-4, atol=1e-5)


def test_only_states_that_predict_answer_tokens_reach_the_loss(models):
    model = models("tiny_llava")
    tokens = model.vl_tokens(((200, 200),), PROMPTS, ANSWERS)
    predicts_answer = torch.zeros_like(tokens.labels, dtype=torch.bool)
    predicts_answer[:, :-1] = tokens.labels[:, 1:] != IGNORE_INDEX
    hidden = torch.randn(*tokens.labels.shape, model.backbone.hidden_size, requires_grad=True)
    loss = answer_cross_entropy(hidden, tokens.labels, model.backbone.lm_head)
    loss.backward()
    grad = hidden.grad.abs().sum(-1)
    assert (grad[~predicts_answer] == 0).all() and (grad[predicts_answer] > 0).all()
    with torch.no_grad():  # what the model predicts for prompt and padding tokens cannot change the loss
        noisy = hidden + 10 * torch.randn_like(hidden) * (~predicts_answer).unsqueeze(-1)
        torch.testing.assert_close(answer_cross_entropy(noisy, tokens.labels, model.backbone.lm_head), loss)
        one = hidden.clone()
        row, col = predicts_answer.nonzero()[0].tolist()
        one[row, col] += 10 * torch.randn(hidden.shape[-1])
        assert (answer_cross_entropy(one, tokens.labels, model.backbone.lm_head) - loss).abs() > 1e-4
    with pytest.raises(ValueError, match="no answer token"):
        answer_cross_entropy(hidden, torch.full_like(tokens.labels, IGNORE_INDEX), model.backbone.lm_head)


@pytest.mark.parametrize("name", FAMILIES)
def test_greedy_decoding_matches_teacher_forcing(name):
    """Each generated token (KV cache, prompts of different lengths) is the argmax of a teacher-forced
    pass over prompt + generated answer, and generation stops only at the end-of-turn token or the limit."""
    model = build(name, seed=1).eval()
    bb = model.backbone
    ims = images(seed=1)
    generated = model.generate_answer_ids(ims, PROMPTS, max_new_tokens=6)
    assert sum(len(g) for g in generated) > 0
    for i, (prompt, ids) in enumerate(zip(PROMPTS, generated)):
        prompt_ids = bb.prompt_ids(prompt, ((200, 200),))
        seq = torch.tensor([prompt_ids + ids])
        prefix = torch.arange(seq.shape[1]).unsqueeze(0) < len(prompt_ids) if bb.prefix_lm else None
        with torch.no_grad():
            hidden = bb.forward(seq, None, bb.pixel_inputs([ims[i : i + 1]]), prefix)
            logits = bb.lm_head(hidden[0, len(prompt_ids) - 1 :]).float()
        for k, token in enumerate(ids):  # the chosen token is the argmax (up to float ties)
            assert logits[k].max() - logits[k, token] < 1e-4, (name, i, k)
        if len(ids) < 6:  # stopped early: the next token is a stop token
            assert int(logits[len(ids)].argmax()) in (bb.end_of_turn_id, bb.tokenizer.eos_token_id)
        assert bb.end_of_turn_id not in ids


def test_overfit_pairs_are_decoded_back_and_survive_a_checkpoint(tmp_path):
    """A few dozen steps on four pairs (two share a question and differ only in the image) make greedy
    decoding return the trained answers; the saved checkpoint answers the same."""
    model = build("tiny_llava", hidden=128, vision_hidden=64)
    ims = torch.stack([torch.full((200, 200, 3), v, dtype=torch.uint8) for v in (20, 120, 220, 60)])
    ims[3, :100] = 250
    prompts = ["Is the drawer open?", "Is the drawer open?", "Where is the red block?", "How many blocks are on the table?"]
    answers = ["yes", "no", "in the left side of the cabinet", "two"]
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    for _ in range(60):
        loss = model.vl_loss(ims, prompts, answers)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.1
    assert model.generate_answers(ims, prompts, max_new_tokens=12) == answers
    assert model.training  # generation leaves the mode alone (evaluation switches it)
    save_checkpoint(tmp_path / "stage1", model, ActionNormalizer(), extra_config={"stage": "vl"})
    loaded = load_checkpoint(tmp_path / "stage1").model
    assert loaded.generate_answers(ims, prompts, max_new_tokens=12) == answers
    torch.testing.assert_close(loaded.vl_loss(ims, prompts, answers), model.eval().vl_loss(ims, prompts, answers))


def test_bad_vl_inputs_name_the_problem(models):
    model = models("tiny_llava")
    with pytest.raises(ValueError, match=r"images\[0\] must be uint8 \(2, H, W, 3\) for 2 prompts"):
        model.vl_loss(images(3), PROMPTS[:2], ANSWERS[:2])
    with pytest.raises(ValueError, match=r"images\[0\] must be uint8"):
        model.generate_answers(images(3).float(), PROMPTS)
    with pytest.raises(ValueError, match="3 prompts but 2 answers"):
        model.vl_loss(images(3), PROMPTS, ANSWERS[:2])
    two_slots = model.vl_loss([images(3), images(3, seed=2)[:, :84, :84]], PROMPTS, ANSWERS)  # e.g. + gripper view
    assert torch.isfinite(two_slots)
