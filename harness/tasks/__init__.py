"""CALVIN's tasks: the 34-task oracle, symbolic states, evaluation chains, initial states, instructions.

Everything here follows docs/CALVIN.md (task oracle to initial states). Imports only harness.sim.layout
(pure data) and harness.spatial (pure numpy).
"""

from harness.tasks.catalog import CATEGORY_NAMES, STATE_KEYS, TASK_CATEGORY, TASK_NAMES, TASKS, TaskSpec, task_spec
from harness.tasks.chains import (
    benchmark_chains,
    eval_chains,
    initial_conditions,
    random_chain,
    random_condition,
    random_task,
)
from harness.tasks.info import InfoView
from harness.tasks.initial_state import condition_seed, fnv1_32, initial_state
from harness.tasks.instructions import (
    eval_instruction,
    sample_training_instruction,
    task_for_instruction,
    training_instruction,
    training_instructions,
)
from harness.tasks.oracle import TaskOracle
from harness.tasks.symbolic import SymbolicState, apply_task, is_valid_chain, symbolic_state, valid_tasks

__all__ = [
    "CATEGORY_NAMES",
    "InfoView",
    "STATE_KEYS",
    "SymbolicState",
    "TASKS",
    "TASK_CATEGORY",
    "TASK_NAMES",
    "TaskOracle",
    "TaskSpec",
    "apply_task",
    "benchmark_chains",
    "condition_seed",
    "eval_chains",
    "eval_instruction",
    "fnv1_32",
    "initial_conditions",
    "initial_state",
    "is_valid_chain",
    "random_chain",
    "random_condition",
    "random_task",
    "sample_training_instruction",
    "symbolic_state",
    "task_for_instruction",
    "task_spec",
    "training_instruction",
    "training_instructions",
    "valid_tasks",
]
