"""VLAModel: a transformers VLM + the [LRN] action token + a policy head.

Per frame the backbone sees (its family's formatting of) `[images] prompt(instruction) [PROPRIO]? [LRN]`;
the last hidden state at [LRN] is the frame's feature.

* `history: post`        - one sequence per frame (B*W sequences); history is fused by the head.
* `history: interleaved` - one sequence per window: the frame segments concatenated (BOS kept once), so
                           each [LRN] attends causally to every earlier frame.

The discrete head appends C*7 action tokens after [LRN] (teacher-forced in training; greedily decoded
with a KV cache at inference): the hidden state at [LRN] predicts the first one, and each action token
predicts the next.

`forward(batch)` takes the training batch of docs/ARCHITECTURE.md and returns the losses;
`predict(batch)` returns normalised chunks (B, W, C, 7): arm in [-1, 1], gripper probability of "open".

Vision-language co-training (docs/vl_cotraining.md): `vl_loss(images, prompts, answers)` is the next-token
cross-entropy on the answer tokens only (labels -100 elsewhere, see `vl_tokens`), through the same
backbone and its LM head; `generate_answers` decodes answers greedily with the KV cache.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .backbones import BackboneAdapter, BackboneCache, load_backbone
from .config import VLAConfig
from .finetune import apply_finetune, format_parameter_report, parameter_report
from .heads import ARM_DIM, SCENE_STATE, DiscreteHead, build_head, continuous_loss, discrete_loss, scene_state_loss
from .tokens import ActionBins, AddedTokenEmbedding, add_vla_tokens

ACTION_DIM = ARM_DIM + 1
Batch = dict[str, Any]


@dataclass
class TokenBatch:
    input_ids: torch.Tensor  # (S, T), right-padded
    attention_mask: torch.Tensor  # (S, T)
    lrn_index: torch.Tensor  # (S, F): position of each frame's [LRN] in its sequence
    prefix_mask: torch.Tensor | None  # (S, T): bidirectional prefix (prefix-LM families, post mode only)


class ProprioEncoder(nn.Module):
    """robot_obs (..., 15) -> one token embedding.

    Euler angles enter as sin/cos (CALVIN's TCP roll sits near +-pi and wraps), the gripper width is
    scaled from metres to ~[0, 1]; positions, joints and the last gripper action are used as they are.
    Without `gripper` the width and the last gripper action enter as zeros: the layer keeps its shape, so
    checkpoints with and without them load into each other (a fine-tune can drop them).
    """

    N_FEATURES = 3 + 3 + 3 + 1 + 7 + 1

    def __init__(self, hidden: int, gripper: bool = True):
        super().__init__()
        self.gripper = gripper
        self.net = nn.Sequential(nn.Linear(self.N_FEATURES, hidden), nn.GELU(), nn.Linear(hidden, hidden))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        if obs.shape[-1] != 15:
            raise ValueError(f"robot_obs must have 15 values in the last axis, got shape {tuple(obs.shape)}")
        euler = obs[..., 3:6]
        width, last_command = obs[..., 6:7] * 12.5, obs[..., 14:15]
        if not self.gripper:
            width, last_command = torch.zeros_like(width), torch.zeros_like(last_command)
        x = torch.cat([obs[..., :3], euler.sin(), euler.cos(), width, obs[..., 7:14], last_command], -1)
        return self.net(x.to(self.net[0].weight.dtype))


class InstructionFiLM(nn.Module):
    """FiLM (Perez et al., 2018) of the per-frame features by the instruction: f * (1 + gamma) + beta,
    with gamma, beta from an MLP over the mean input word embedding of the instruction's tokens.

    The [LRN] feature carries the instruction only as far as the backbone's attention brings it there; at
    a subtask's first frame, where image and robot state are the same for every task, it is all that
    tells the tasks apart. This path gives the action loss a direct route to the words. The last layer
    starts at zero, so the modulation starts as the identity (a model with it predicts what the same
    model without it does until it trains).
    """

    def __init__(self, hidden: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, 2 * hidden))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)

    def forward(self, features: torch.Tensor, instruction: torch.Tensor) -> torch.Tensor:
        """features (B, W, H), instruction (B, H) -> (B, W, H)."""
        gamma, beta = self.net(instruction.to(self.net[0].weight.dtype)).unsqueeze(1).chunk(2, dim=-1)
        return features * (1 + gamma) + beta


class VLAModel(nn.Module):
    def __init__(self, cfg: VLAConfig, backbone: BackboneAdapter):
        super().__init__()
        backbone.check_config(cfg)
        if cfg.loss.state_weight > 0 and cfg.loss.state_from == "image" and backbone.prefix_lm:
            raise ValueError(f"loss.state_from=image: {backbone.family}'s image tokens attend to the instruction "
                             "(a bidirectional prefix), so they do not show what the images alone say; use lrn")
        self.cfg = cfg
        self.backbone = backbone  # plain object; its HF model is registered as `vlm`
        self.vlm = backbone.model
        discrete = cfg.head.type == "discrete"
        ids = add_vla_tokens(backbone.tokenizer, cfg.head.n_bins if discrete else 0)
        self.lrn_id, self.proprio_id = ids["lrn"], ids["proprio"]
        self.register_buffer("action_token_ids", torch.tensor(ids["actions"], dtype=torch.long), persistent=False)
        embed = self.vlm.get_input_embeddings()
        if isinstance(embed, AddedTokenEmbedding):
            raise ValueError("this backbone already carries VLA tokens; build a VLAModel from a fresh backbone")
        self.vlm.set_input_embeddings(AddedTokenEmbedding(embed, [self.lrn_id, self.proprio_id, *ids["actions"]]))
        hidden = backbone.hidden_size
        self.proprio = ProprioEncoder(hidden, cfg.proprio_gripper) if cfg.use_proprio else None
        self.head = build_head(cfg.head, hidden, cfg.chunk_size, cfg.window_size)
        self.film = InstructionFiLM(hidden) if cfg.instruction_film else None
        self.state_probe = nn.Linear(hidden, len(SCENE_STATE)) if cfg.loss.state_weight > 0 else None
        self._instruction_ids: dict[str, list[int]] = {}  # instruction -> its token ids (FiLM)
        self.bins = ActionBins(cfg.head.n_bins)
        self._bounded_cache: dict[str, str] = {}  # long instruction -> its cut
        self._warned_cut = False

    @classmethod
    def build(cls, cfg: VLAConfig, verbose: bool = True) -> "VLAModel":
        """Load/construct the backbone named by `cfg.backbone`, add the VLA parts, apply `cfg.finetune`;
        print the trainable parameters per part."""
        model = cls(cfg, load_backbone(cfg.backbone))
        apply_finetune(model, cfg.finetune)
        if verbose:
            print(format_parameter_report(parameter_report(model)))
        return model

    @property
    def embed(self) -> AddedTokenEmbedding:
        return self.vlm.get_input_embeddings()

    @property
    def discrete(self) -> bool:
        return isinstance(self.head, DiscreteHead)

    @property
    def n_action_tokens(self) -> int:
        return self.cfg.chunk_size * ACTION_DIM

    # ------------------------------------------------------------------ inputs
    def _check(self, batch: Batch, need_actions: bool) -> tuple[int, int]:
        rgb = batch.get("rgb_static")
        if rgb is None or rgb.ndim != 5 or rgb.shape[-1] != 3 or rgb.dtype != torch.uint8:
            got = None if rgb is None else f"{rgb.dtype} {tuple(rgb.shape)}"
            raise ValueError(f"batch['rgb_static'] must be uint8 (B, W, H, W, 3), got {got}")
        b, w = rgb.shape[:2]
        if self.cfg.use_gripper_image and "rgb_gripper" not in batch:
            raise ValueError("model config has use_gripper_image=true but the batch has no 'rgb_gripper'")
        if self.cfg.use_proprio and "robot_obs" not in batch:
            raise ValueError("model config has use_proprio=true but the batch has no 'robot_obs'")
        if len(batch["instruction"]) != b:
            raise ValueError(f"batch['instruction'] has {len(batch['instruction'])} entries for batch size {b}")
        if need_actions:
            expect = (b, w, self.cfg.chunk_size, ACTION_DIM)
            if tuple(batch["actions"].shape) != expect:
                raise ValueError(f"batch['actions'] must have shape {expect} (B, W, chunk_size, 7), got {tuple(batch['actions'].shape)}")
            if tuple(batch["action_mask"].shape) != expect[:3]:
                raise ValueError(f"batch['action_mask'] must have shape {expect[:3]}, got {tuple(batch['action_mask'].shape)}")
        return b, w

    def _cameras(self, batch: Batch) -> list[torch.Tensor]:
        keys = ["rgb_static"] + (["rgb_gripper"] if self.cfg.use_gripper_image else [])
        return [batch[k] for k in keys]

    def _image_slots(self, batch: Batch) -> list[torch.Tensor]:
        """The images of every sequence, slot by slot: post -> (B*W, H, W, 3) per camera;
        interleaved -> (B, H, W, 3) per (frame, camera)."""
        cams = self._cameras(batch)
        if self.cfg.history == "post":
            return [c.flatten(0, 1) for c in cams]
        return [c[:, w] for w in range(cams[0].shape[1]) for c in cams]

    def _image_sizes(self, batch: Batch) -> tuple[tuple[int, int], ...]:
        return tuple((int(c.shape[2]), int(c.shape[3])) for c in self._cameras(batch))

    def prompt(self, instruction: str) -> str:
        """The backbone prompt around the instruction, cut to `backbone.max_instruction_tokens` tokens."""
        return self.cfg.backbone.prompt.format(instruction=self._bounded(instruction))

    def _bounded(self, instruction: str) -> str:
        """The instruction, or its longest prefix of at most `max_instruction_tokens` tokens (warned once)."""
        limit = self.cfg.backbone.max_instruction_tokens
        if instruction not in self._bounded_cache:  # tokenized once (a character can take several byte-level tokens)
            enc = self.backbone.tokenizer(instruction, add_special_tokens=False, return_offsets_mapping=True)
            cut = instruction
            if len(enc["input_ids"]) > limit:
                cut = instruction[: enc["offset_mapping"][limit - 1][1]]
                if not self._warned_cut:
                    self._warned_cut = True
                    warnings.warn(f"an instruction of {len(enc['input_ids'])} tokens was cut to its first {limit} "
                                  "(model.backbone.max_instruction_tokens); further cuts are not reported", stacklevel=3)
            if len(self._bounded_cache) >= 1024:  # instructions are few; the cache is for repeated steps
                self._bounded_cache.clear()
            self._bounded_cache[instruction] = cut
        return self._bounded_cache[instruction]

    def instruction_embedding(self, instructions: list[str]) -> torch.Tensor:
        """(B, H): the mean input word embedding of each (bounded) instruction's tokens."""
        ids = [self._word_ids(i) for i in instructions]
        device = self.embed.added.device
        longest = max(len(x) for x in ids)
        padded = torch.tensor([x + [x[0]] * (longest - len(x)) for x in ids], device=device)
        mask = (torch.arange(longest, device=device) < torch.tensor([len(x) for x in ids], device=device).unsqueeze(1))
        emb = self.embed(padded).float() * mask.unsqueeze(-1)
        return emb.sum(1) / mask.sum(1, keepdim=True)

    def _word_ids(self, instruction: str) -> list[int]:
        if instruction not in self._instruction_ids:
            ids = self.backbone.tokenizer(self._bounded(instruction), add_special_tokens=False)["input_ids"]
            if not ids:
                raise ValueError(f"instruction {instruction!r} has no tokens: instruction_film needs words to read")
            if len(self._instruction_ids) >= 1024:  # instructions are few; the cache is for repeated steps
                self._instruction_ids.clear()
            self._instruction_ids[instruction] = ids
        return self._instruction_ids[instruction]

    def prompt_length(self, instruction: str, image_sizes: tuple[tuple[int, int], ...]) -> int:
        return len(self.backbone.prompt_ids(self.prompt(instruction), image_sizes))

    def _tokens(self, batch: Batch, action_bins: torch.Tensor | None = None, continuing: bool = False) -> TokenBatch:
        """Token sequences of the batch. `action_bins` (B, W, C*7) appends action tokens after each [LRN];
        `continuing` marks frames that extend an earlier (cached) interleaved sequence."""
        interleaved = self.cfg.history == "interleaved"
        sizes = self._image_sizes(batch)
        n_frames = batch["rgb_static"].shape[1]
        bos = self.backbone.bos_token_id
        seqs: list[list[int]] = []
        lrn: list[list[int]] = []
        action_ids = self.action_token_ids.tolist()
        for b, instruction in enumerate(batch["instruction"]):
            prompt = self.backbone.prompt_ids(self.prompt(instruction), sizes)
            seq: list[int] = []
            idx: list[int] = []
            for w in range(n_frames):
                ids = list(prompt)
                if interleaved and (w > 0 or continuing) and bos is not None and ids[0] == bos:
                    ids = ids[1:]  # one BOS per interleaved sequence
                ids += ([self.proprio_id] if self.cfg.use_proprio else []) + [self.lrn_id]
                pos = len(ids) - 1
                if action_bins is not None:
                    ids += [action_ids[i] for i in action_bins[b, w].tolist()]
                if interleaved:
                    idx.append(len(seq) + pos)
                    seq += ids
                else:
                    seqs.append(ids)
                    lrn.append([pos])
            if interleaved:
                seqs.append(seq)
                lrn.append(idx)
        t = max(len(s) for s in seqs)
        device = batch["rgb_static"].device
        pad = self.backbone.tokenizer.pad_token_id or 0
        input_ids = torch.tensor([s + [pad] * (t - len(s)) for s in seqs], dtype=torch.long)
        mask = (torch.arange(t) < torch.tensor([len(s) for s in seqs]).unsqueeze(1)).long()
        lrn_index = torch.tensor(lrn, dtype=torch.long)
        prefix = None
        if self.backbone.prefix_lm and not interleaved:  # image + prompt + [LRN] bidirectional, actions causal
            prefix = (torch.arange(t).unsqueeze(0) <= lrn_index[:, :1]) & mask.bool()
            prefix = prefix.to(device)
        return TokenBatch(input_ids.to(device), mask.to(device), lrn_index.to(device), prefix)

    def _run(self, batch: Batch, action_bins: torch.Tensor | None = None, cache: BackboneCache | None = None,
             continuing: bool = False, lrn_only: bool = False) -> tuple[torch.Tensor, TokenBatch]:
        """Backbone hidden states (S, T, H) of the batch's sequences. `lrn_only` (read where no gradient
        is needed): only the [LRN] positions' states are computed in full (`BackboneAdapter.last_layer_rows`),
        the others are not meant to be read."""
        tokens = self._tokens(batch, action_bins, continuing)
        pixels = self.backbone.pixel_inputs(self._image_slots(batch))
        proprio = None
        if self.proprio is not None:
            proprio = self.proprio(batch["robot_obs"].to(tokens.input_ids.device)).flatten(0, 1)  # (b, w) order
        unpadded = bool(tokens.attention_mask.all())
        if cache is not None and not unpadded:
            raise ValueError("cached backbone calls need sequences of equal length (no padding)")
        attention_mask = None if unpadded else tokens.attention_mask  # no mask to build when nothing is padded
        rows = tokens.lrn_index if lrn_only and not torch.is_grad_enabled() else None
        with self.embed.inject(self.proprio_id, proprio), self.backbone.last_layer_rows(rows):
            hidden = self.backbone.forward(tokens.input_ids, attention_mask, pixels, tokens.prefix_mask, cache)
        return hidden, tokens

    # ------------------------------------------------------------------ training
    def features(self, batch: Batch, cache: BackboneCache | None = None, continuing: bool = False) -> torch.Tensor:
        """The [LRN] feature of every frame (FiLM-ed by the instruction with `instruction_film`): (B, W, H)."""
        b, w = self._check(batch, need_actions=False)
        hidden, tokens = self._run(batch, cache=cache, continuing=continuing, lrn_only=True)
        return self._lrn_features(batch, hidden, tokens, b, w)

    def _lrn_features(self, batch: Batch, hidden: torch.Tensor, tokens: TokenBatch, b: int, w: int) -> torch.Tensor:
        features = _gather(hidden, tokens.lrn_index).reshape(b, w, -1)
        if self.film is not None:
            features = self.film(features, self.instruction_embedding(list(batch["instruction"])))
        return features

    def _image_states(self, hidden: torch.Tensor, tokens: TokenBatch, b: int, w: int) -> torch.Tensor:
        """(B, W, H): the hidden state at each frame's last image token (history=post: a sequence per frame).
        The prompt puts the images before the instruction, so in a causal backbone it has not read the words."""
        is_image = self.backbone.image_positions(tokens.input_ids)
        last = hidden.shape[1] - 1 - is_image.flip(1).int().argmax(1)
        return _gather(hidden, last.unsqueeze(1)).reshape(b, w, -1)

    def image_states(self, batch: Batch) -> torch.Tensor:
        """(B, W, H): each frame's backbone state at its last image token (`_image_states`)."""
        b, w = self._check(batch, need_actions=False)
        hidden, tokens = self._run(batch)
        return self._image_states(hidden, tokens, b, w)

    def scene_features(self, batch: Batch) -> torch.Tensor:
        """(B, W, H): what the scene-state probe reads, per `loss.state_from` (the [LRN] features, or each
        frame's state at its last image token)."""
        return self.features(batch) if self.cfg.loss.state_from == "lrn" else self.image_states(batch)

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        """Losses of a training batch: `loss`, `loss_arm`, `loss_gripper`, `acc_gripper`, `loss_state` (the
        scene-state loss; 0 when off), the first the weighted sum of the others."""
        b, w = self._check(batch, need_actions=True)
        actions = batch["actions"].float()
        mask = batch["action_mask"].bool()
        last_command = batch["robot_obs"][..., 14].float() if "robot_obs" in batch else None
        if self.discrete:
            bins = self.bins.encode(actions)  # (B, W, C, 7)
            hidden, tokens = self._run(batch, action_bins=bins.flatten(2))
            # the [LRN] state predicts action token 0, action token k predicts token k + 1
            positions = tokens.lrn_index.unsqueeze(-1) + torch.arange(self.n_action_tokens, device=hidden.device)
            h = _gather(hidden, positions.flatten(1))
            logits = self.head.logits(h).view(b, w, self.cfg.chunk_size, ACTION_DIM, -1)
            return discrete_loss(logits, bins, mask, self.cfg.loss, last_command)
        image_states = self.state_probe is not None and self.cfg.loss.state_from == "image"
        hidden, tokens = self._run(batch, lrn_only=not image_states)
        features = self._lrn_features(batch, hidden, tokens, b, w)
        arm, grip = self.head(features)
        out = continuous_loss(arm, grip, actions, mask, self.cfg.loss, last_command)
        if self.state_probe is not None:
            seen = self._image_states(hidden, tokens, b, w) if image_states else features
            out["loss_state"] = scene_state_loss(self.state_probe(seen), batch["scene_obs"])
            out["loss"] = out["loss"] + self.cfg.loss.state_weight * out["loss_state"]
        return out

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict(self, batch: Batch) -> torch.Tensor:
        """Normalised action chunks (B, W, C, 7) for every frame of the window (no incremental state)."""
        b, w = self._check(batch, need_actions=False)
        if not self.discrete:
            arm, grip = self.head(self.features(batch))
            return torch.cat([arm, torch.sigmoid(grip).unsqueeze(-1)], dim=-1).float()
        out = torch.empty(b, w, self.cfg.chunk_size, ACTION_DIM, device=batch["rgb_static"].device)
        sizes = self._image_sizes(batch)
        groups: dict[int, list[int]] = {}
        for i, instruction in enumerate(batch["instruction"]):  # equal prompt lengths decode together unpadded
            groups.setdefault(self.prompt_length(instruction, sizes), []).append(i)
        for idx in groups.values():
            sub = select(batch, idx)
            if self.cfg.history == "post":
                bins = self.decode_actions(sub).view(len(idx), w, -1)
            else:
                cache = BackboneCache()
                bins = torch.stack([self.decode_actions(frame(sub, t), cache, continuing=t > 0) for t in range(w)], 1)
            out[idx] = self.bins.decode(bins.view(len(idx), w, self.cfg.chunk_size, ACTION_DIM))
        return out

    @torch.no_grad()
    def decode_actions(self, batch: Batch, cache: BackboneCache | None = None, continuing: bool = False) -> torch.Tensor:
        """Greedy decoding of C*7 action tokens after each [LRN], with a KV cache: bins (S, C*7).

        Sequences must have equal lengths. With `cache` (interleaved), the frame and its decoded action
        tokens are appended to it."""
        cache = BackboneCache() if cache is None else cache
        hidden, _ = self._run(batch, cache=cache, continuing=continuing, lrn_only=True)
        h = hidden[:, -1]  # [LRN] closes every prompt
        bins = []
        for k in range(self.n_action_tokens):
            bins.append(self.head.logits(h).argmax(-1))
            if k + 1 < self.n_action_tokens or self.cfg.history == "interleaved":
                # interleaved: the last token also enters the cache, as the next frame follows it
                token = self.action_token_ids[bins[-1]].unsqueeze(1)
                h = self.backbone.forward(token, None, None, None, cache)[:, -1]
        return torch.stack(bins, dim=1)

    # ------------------------------------------------------------------ vision-language co-training
    def vl_tokens(self, image_sizes: tuple[tuple[int, int], ...], prompts: list[str], answers: list[str],
                  device: torch.device | str = "cpu") -> VLTokens:
        """Token sequences `<family formatting of: [images] prompt> answer <end of turn>`, right-padded,
        with labels -100 everywhere but on the answer and its end-of-turn token."""
        if len(prompts) != len(answers):
            raise ValueError(f"vision-language batch: {len(prompts)} prompts but {len(answers)} answers")
        seqs, starts = [], []
        for prompt, answer in zip(prompts, answers):
            ids = self.backbone.prompt_ids(prompt, image_sizes)
            seqs.append(list(ids) + self.backbone.answer_ids(answer))
            starts.append(len(ids))
        t = max(len(s) for s in seqs)
        input_ids = torch.full((len(seqs), t), self.backbone.tokenizer.pad_token_id or 0, dtype=torch.long)
        mask = torch.zeros_like(input_ids)
        labels = torch.full_like(input_ids, IGNORE_INDEX)
        for i, (seq, start) in enumerate(zip(seqs, starts)):
            input_ids[i, : len(seq)] = torch.tensor(seq)
            mask[i, : len(seq)] = 1
            labels[i, start : len(seq)] = input_ids[i, start : len(seq)]
        prefix = None
        if self.backbone.prefix_lm:  # images + prompt attend bidirectionally, the answer causally
            prefix = (torch.arange(t).unsqueeze(0) < torch.tensor(starts).unsqueeze(1)).to(device)
        return VLTokens(input_ids.to(device), mask.to(device), labels.to(device), prefix)

    def vl_loss(self, images: torch.Tensor | list[torch.Tensor], prompts: list[str], answers: list[str]) -> torch.Tensor:
        """Next-token cross-entropy on the answer tokens only (answer + end-of-turn), through the same
        backbone and its LM head; the mean over all answer tokens of the batch.

        `images`: uint8 (B, H, W, 3), or a list whose j-th entry is the j-th image of every sample."""
        images = _image_list(images, len(prompts))
        sizes = tuple((int(im.shape[1]), int(im.shape[2])) for im in images)
        tokens = self.vl_tokens(sizes, prompts, answers, images[0].device)
        unpadded = bool(tokens.attention_mask.all())
        hidden = self.backbone.forward(tokens.input_ids, None if unpadded else tokens.attention_mask,
                                       self.backbone.pixel_inputs(images), tokens.prefix_mask)
        return answer_cross_entropy(hidden, tokens.labels, self.backbone.lm_head)

    @torch.no_grad()
    def generate_answer_ids(self, images: torch.Tensor | list[torch.Tensor], prompts: list[str],
                            max_new_tokens: int = 32) -> list[list[int]]:
        """Greedy decoding with the KV cache, per sample until the end-of-turn/EOS token (not returned)
        or `max_new_tokens`. Prompts of equal token length decode together, unpadded."""
        images = _image_list(images, len(prompts))
        sizes = tuple((int(im.shape[1]), int(im.shape[2])) for im in images)
        stop = torch.tensor(sorted({self.backbone.end_of_turn_id, self.backbone.tokenizer.eos_token_id}),
                            device=images[0].device)
        groups: dict[int, list[int]] = {}
        for i, prompt in enumerate(prompts):
            groups.setdefault(len(self.backbone.prompt_ids(prompt, sizes)), []).append(i)
        out: list[list[int]] = [[] for _ in prompts]
        for idx in groups.values():
            ids = torch.tensor([self.backbone.prompt_ids(prompts[i], sizes) for i in idx], device=stop.device)
            select_idx = torch.tensor(idx, device=stop.device)
            prefix = torch.ones_like(ids, dtype=torch.bool) if self.backbone.prefix_lm else None
            cache = BackboneCache()
            h = self.backbone.forward(ids, None, self.backbone.pixel_inputs([im[select_idx] for im in images]), prefix, cache)
            done = torch.zeros(len(idx), dtype=torch.bool, device=stop.device)
            for _ in range(max_new_tokens):
                token = self.backbone.lm_head(h[:, -1]).argmax(-1)
                done |= torch.isin(token, stop)
                for row in (~done).nonzero().flatten().tolist():
                    out[idx[row]].append(int(token[row]))
                if bool(done.all()):
                    break
                h = self.backbone.forward(token.unsqueeze(1), None, None, None, cache)
        return out

    def generate_answers(self, images: torch.Tensor | list[torch.Tensor], prompts: list[str],
                         max_new_tokens: int = 32) -> list[str]:
        """Greedy answers as text (special tokens dropped, surrounding whitespace stripped)."""
        tok = self.backbone.tokenizer
        return [tok.decode(ids, skip_special_tokens=True).strip()
                for ids in self.generate_answer_ids(images, prompts, max_new_tokens)]


IGNORE_INDEX = -100  # label of every token the vision-language loss does not supervise


@dataclass
class VLTokens:
    input_ids: torch.Tensor  # (B, T), right-padded
    attention_mask: torch.Tensor  # (B, T)
    labels: torch.Tensor  # (B, T): the token itself on answer + end-of-turn positions, IGNORE_INDEX elsewhere
    prefix_mask: torch.Tensor | None  # (B, T): bidirectional image + prompt prefix (prefix-LM families)


def answer_cross_entropy(hidden: torch.Tensor, labels: torch.Tensor, lm_head: nn.Module) -> torch.Tensor:
    """Mean next-token cross-entropy where `labels` (aligned with the inputs, as in transformers) is not
    IGNORE_INDEX: the state at t - 1 predicts labels[t]. The LM head runs on those states only, so no
    other position can reach the loss (and a large vocabulary costs nothing for the prompt)."""
    target = labels[:, 1:]
    rows, cols = (target != IGNORE_INDEX).nonzero(as_tuple=True)
    if rows.numel() == 0:
        raise ValueError("no answer token to supervise: every label is IGNORE_INDEX")
    logits = lm_head(hidden[:, :-1][rows, cols])
    return F.cross_entropy(logits.float(), target[rows, cols])


def _image_list(images: torch.Tensor | list[torch.Tensor], n: int) -> list[torch.Tensor]:
    """uint8 (B, H, W, 3) or a list of them (one per image slot) -> the list, checked against B = n."""
    images = [images] if isinstance(images, torch.Tensor) else list(images)
    for j, im in enumerate(images):
        if im.dtype != torch.uint8 or im.ndim != 4 or im.shape[-1] != 3 or im.shape[0] != n:
            raise ValueError(f"vision-language images[{j}] must be uint8 ({n}, H, W, 3) for {n} prompts, "
                             f"got {im.dtype} {tuple(im.shape)}")
    if not images:
        raise ValueError("vision-language samples need at least one image")
    return images


def _gather(hidden: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """hidden (S, T, H), index (S, K) -> (S, K, H)."""
    return hidden.gather(1, index.unsqueeze(-1).expand(-1, -1, hidden.shape[-1]))


def select(batch: Batch, idx: list[int]) -> Batch:
    """The samples `idx` of a batch (tensors and lists along the first axis)."""
    out = {}
    for k, v in batch.items():
        if isinstance(v, torch.Tensor):
            out[k] = v[torch.tensor(idx, device=v.device)]
        elif isinstance(v, (list, tuple)):
            out[k] = [v[i] for i in idx]
        else:
            out[k] = v
    return out


PER_FRAME_INPUTS = ("rgb_static", "rgb_gripper", "robot_obs")


def frame(batch: Batch, t: int) -> Batch:
    """The window of length 1 at frame `t` (per-frame keys sliced, the rest kept)."""
    return {k: (v[:, t : t + 1] if k in PER_FRAME_INPUTS else v) for k, v in batch.items() if k not in ("actions", "action_mask")}
