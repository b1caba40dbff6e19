"""Dataclass configs of the VLA model: backbone, history, head, loss and fine-tuning.

`VLAConfig`'s defaults are the base every preset of the hydra group `configs/model/*.yaml` builds on (a
preset sets only what differs); `VLAConfig.from_dict` turns a resolved mapping back into dataclasses and
rejects unknown keys and mistyped values, so a typo in a config fails at start-up instead of silently
falling back to a default. The same dict is written into every checkpoint's `config.yaml`.

The model owns the shape of its training samples: `window_size` frames of history, a chunk of `chunk_size`
actions per frame (RoboVLMs' `fwd_pred_next_n`, accepted as an alias when reading a config), the cameras, and
robot_obs and scene_obs where the model or its losses read them. The dataset derives its windows from them
(`window_spec()`), as the trainer builds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Mapping

from harness.strict_config import from_mapping, plain

if TYPE_CHECKING:
    from harness.data.windows import WindowSpec

HISTORY_MODES = ("post", "interleaved")
HEAD_TYPES = ("mlp", "lstm", "gpt", "discrete")
STATE_SOURCES = ("lrn", "image")  # what the scene-state probe reads (LossConfig.state_from)
FINETUNE_MODES = ("full", "lora", "frozen")
LORA_BIAS = ("none", "all", "lora_only")


@dataclass
class BackboneConfig:
    """Which vision-language model, and how its prompt is phrased.

    Exactly one of `pretrained` (a hub id or a local folder, loaded with `from_pretrained`) and `tiny`
    (the name of a random-init preset in `agents.vla.tiny`, built from a config) is set.
    """

    family: str = "llava"  # key of agents.vla.backbones.ADAPTERS
    pretrained: str | None = None
    tiny: str | None = None
    tiny_size: dict[str, int] = field(default_factory=dict)  # overrides of agents.vla.tiny.TinySize
    # `{instruction}` is replaced by the language annotation; the family's chat template/processor wraps it.
    prompt: str = "What action should the robot take to {instruction}?"
    # An instruction longer than this many tokens is cut (with a warning): one step's cost stays bounded
    # whatever text arrives. CALVIN's instructions have fewer than 30.
    max_instruction_tokens: int = 128
    dtype: str = "float32"  # weights dtype at load or build (tiny presets too): float32 | bfloat16 | float16
    attn_implementation: str = "sdpa"

    def __post_init__(self) -> None:
        if (self.pretrained is None) == (self.tiny is None):
            raise ValueError(
                f"backbone: set exactly one of `pretrained` (hub id or folder) and `tiny` (preset name); "
                f"got pretrained={self.pretrained!r}, tiny={self.tiny!r}"
            )
        if "{instruction}" not in self.prompt:
            raise ValueError(f"backbone.prompt must contain '{{instruction}}', got {self.prompt!r}")
        if self.max_instruction_tokens < 1:
            raise ValueError(f"backbone.max_instruction_tokens must be >= 1, got {self.max_instruction_tokens}")
        if self.dtype not in ("float32", "bfloat16", "float16"):
            raise ValueError(f"backbone.dtype must be float32, bfloat16 or float16, got {self.dtype!r}")


@dataclass
class HeadConfig:
    """The policy head over the per-frame [LRN] features (or the LM itself for `discrete`)."""

    type: str = "lstm"  # mlp | lstm | gpt | discrete
    hidden_size: int = 256  # width of the LSTM / GPT trunk and of the MLP trunk
    num_layers: int = 2  # LSTM layers / GPT blocks / MLP trunk layers
    num_heads: int = 4  # GPT attention heads
    dropout: float = 0.0
    n_bins: int = 256  # discrete: action bins (= added action tokens) over [-1, 1]

    def __post_init__(self) -> None:
        if self.type not in HEAD_TYPES:
            raise ValueError(f"head.type must be one of {HEAD_TYPES}, got {self.type!r}")
        if self.type == "gpt" and self.hidden_size % self.num_heads:
            raise ValueError(f"head.hidden_size {self.hidden_size} must be divisible by head.num_heads {self.num_heads}")
        if self.n_bins < 2:
            raise ValueError(f"head.n_bins must be >= 2, got {self.n_bins}")


@dataclass
class LossConfig:
    """loss = arm_weight * smooth-L1(arm) + gripper_weight * BCE(gripper) (the discrete head: the arm tokens' mean
    cross-entropy and the gripper token's); both masked at segment ends."""

    arm_weight: float = 1.0
    # null: the head's own (agents.vla.heads.GRIPPER_WEIGHTS). Continuous heads 0.01, RoboVLMs' CALVIN setting
    # (arm_gripper_loss_ratio) for BCE beside smooth-L1; the discrete head 1/6, its gripper token weighing as one
    # of the six arm tokens, as in RoboVLMs' cross-entropy over all action tokens (0.01 gave it a seventeenth of an
    # arm token's gradient)
    gripper_weight: float | None = None
    smooth_l1_beta: float = 1.0  # RoboVLMs uses Huber with delta 1 (= smooth-L1 with beta 1)
    # auxiliary, training only: a linear probe on each frame's [LRN] feature predicts the scene's state from
    # scene_obs (agents.vla.heads.SCENE_STATE), so the features must say where the objects are; the policy
    # never gets scene_obs (docs/vla_model.md, "Scene-state loss"). 0: off
    state_weight: float = 0.0
    # what the probe reads: "lrn", the [LRN] feature the head gets (after the instruction); "image", the
    # backbone's state at the frame's last image token, before the instruction in the prompt, so the images
    # alone must say what the scene holds (docs/vla_model.md, "Scene-state loss"; docs/TRAINING.md, "What the
    # features read": from [LRN] the probe learnt the training scenes by their instructions)
    state_from: str = "lrn"
    # keyframe weighting against the copycat gripper (docs/TRAINING.md, "Why it does not grasp"): the gripper
    # loss of each chunk step whose target differs from the frame's last gripper command (robot_obs[14]), the
    # steps where copying that command is wrong, counts this many times. 1: every step alike
    gripper_switch_weight: float = 1.0


@dataclass
class FinetuneConfig:
    """What of the backbone trains. The [LRN]/added tokens, proprio encoder and head always train."""

    mode: str = "full"  # full | lora | frozen (whole backbone frozen)
    train_vision: bool = True  # vision tower + projector
    train_embeddings: bool = True  # the backbone's own word embeddings (added tokens train regardless)
    train_decoder_layers: int = -1  # full mode: -1 = all decoder layers, k >= 0 = only the last k
    train_lm_head: bool = False  # an untied LM head (only vision-language co-training reaches it)
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.05
    lora_bias: str = "none"  # none | all | lora_only (peft semantics)
    gradient_checkpointing: bool = False

    def __post_init__(self) -> None:
        if self.mode not in FINETUNE_MODES:
            raise ValueError(f"finetune.mode must be one of {FINETUNE_MODES}, got {self.mode!r}")
        if self.lora_bias not in LORA_BIAS:
            raise ValueError(f"finetune.lora_bias must be one of {LORA_BIAS}, got {self.lora_bias!r}")
        if self.train_decoder_layers < -1:
            raise ValueError(f"finetune.train_decoder_layers must be -1 (all) or >= 0, got {self.train_decoder_layers}")


@dataclass
class VLAConfig:
    backbone: BackboneConfig = field(default_factory=lambda: BackboneConfig(tiny="tiny_llava"))
    head: HeadConfig = field(default_factory=HeadConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    history: str = "post"  # post: one VLM pass per frame, fusion in the head; interleaved: one pass per window
    window_size: int = 8  # frames of history per sample
    chunk_size: int = 10  # actions C predicted at every frame (RoboVLMs: fwd_pred_next_n)
    use_gripper_image: bool = False  # the gripper camera besides the static one
    use_proprio: bool = True  # robot_obs becomes one [PROPRIO] token before [LRN]
    # robot_obs's gripper entries (opening width, last gripper action) in the [PROPRIO] token. With them a
    # policy can predict the gripper by copying the last command and never learn when to switch it (the doctor's
    # "gripper switches" check); false zeroes them, and the cameras must tell (docs/vla_model.md, "Proprioception").
    proprio_gripper: bool = True
    # FiLM of every frame's [LRN] feature by the instruction's mean word embedding, before the head
    # (agents.vla.model.InstructionFiLM): a path from the instruction to the action that does not go
    # through the backbone's attention (docs/vla_model.md, "Instruction FiLM").
    instruction_film: bool = False

    def __post_init__(self) -> None:
        if self.history not in HISTORY_MODES:
            raise ValueError(f"history must be one of {HISTORY_MODES}, got {self.history!r}")
        if (self.loss.gripper_weight or 0) < 0 or self.loss.arm_weight < 0:
            raise ValueError(f"loss.arm_weight and loss.gripper_weight must be >= 0, got {self.loss.arm_weight} and "
                             f"{self.loss.gripper_weight}")
        if self.instruction_film and self.head.type == "discrete":
            raise ValueError("instruction_film modulates the [LRN] features of a continuous head; "
                             "head.type=discrete reads actions from the language model's tokens instead")
        if self.loss.state_weight < 0 or (self.loss.state_weight > 0 and self.head.type == "discrete"):
            raise ValueError(f"loss.state_weight must be >= 0, and 0 with head.type=discrete (its features are the "
                             f"language model's action tokens), got {self.loss.state_weight} with {self.head.type}")
        if self.loss.state_from not in STATE_SOURCES:
            raise ValueError(f"loss.state_from must be one of {STATE_SOURCES}, got {self.loss.state_from!r}")
        if self.loss.state_from == "image" and self.history != "post":
            raise ValueError("loss.state_from=image reads a frame's own image tokens: it needs history=post "
                             "(interleaved frames see the earlier frames' instructions)")
        if self.loss.gripper_switch_weight <= 0:
            raise ValueError(f"loss.gripper_switch_weight must be > 0 (1: off), got {self.loss.gripper_switch_weight}")
        if not self.proprio_gripper and not self.use_proprio:
            raise ValueError("proprio_gripper=false leaves the gripper out of robot_obs, which use_proprio=false already drops")
        if self.window_size < 1 or self.chunk_size < 1:
            raise ValueError(f"window_size and chunk_size must be >= 1, got {self.window_size}, {self.chunk_size}")
        if self.history == "interleaved" and self.head.type == "discrete" and self.window_size > 1 and self.chunk_size > 1:
            raise ValueError(
                f"history=interleaved with head.type=discrete puts each earlier frame's action chunk in the context, "
                f"teacher-forced in training: with chunk_size {self.chunk_size} a frame reads {self.chunk_size - 1} of "
                "its own targets from the frame before it (at test time, the model's own earlier predictions). Use "
                "history=post, chunk_size=1 or window_size=1 (docs/vla_model.md)")

    @property
    def fwd_pred_next_n(self) -> int:
        """RoboVLMs' name of `chunk_size`."""
        return self.chunk_size

    @property
    def cameras(self) -> tuple[str, ...]:
        return ("static", "gripper") if self.use_gripper_image else ("static",)

    def window_spec(self) -> "WindowSpec":
        """What one training sample must hold for this model: the dataset's windows follow it."""
        from harness.data.windows import WindowSpec

        # the switch weight reads the last gripper command from robot_obs, also when the model does not see it
        robot_obs = self.use_proprio or self.loss.gripper_switch_weight != 1
        return WindowSpec(self.window_size, self.chunk_size, self.cameras, robot_obs,
                          scene_state=self.loss.state_weight > 0)

    def to_dict(self) -> dict[str, Any]:
        return plain(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "VLAConfig":
        if isinstance(d, Mapping) and "fwd_pred_next_n" in d:  # RoboVLMs' name (and checkpoints written before)
            if "chunk_size" in d:
                raise ValueError("model: set chunk_size or its alias fwd_pred_next_n, not both")
            d = {("chunk_size" if k == "fwd_pred_next_n" else k): v for k, v in d.items()}
        return from_mapping(cls, d, "model")
