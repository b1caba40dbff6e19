"""CALVIN's evaluation chains (docs/CALVIN.md#chain-generator), item for item, and random chains for recording.

Two entry points for evaluation, because CALVIN's generator depends on the number asked for:
- `eval_chains(n)` is CALVIN's `get_sequences(n)`: the per-condition counts come from
  `array_split(range(n), 192)`, so for n != 1000 it is a different list, not a prefix.
- `benchmark_chains(k)` is the first k of the fixed 1000-chain list. Published evaluations use that
  list; an evaluation of fewer chains runs its first k, which is what this returns.

Generating the 1000-chain list takes seconds (tens on a busy machine), so it is kept as JSON in the user's
cache folder (`VLA_HARNESS_CACHE`, else `$XDG_CACHE_HOME/vla-harness`, else `~/.cache/vla-harness`) and
read back only when its sha256 is `CHAINS_1000_SHA256`: a corrupt or edited file is generated afresh.

The legacy MT19937 stream is reproduced with private `numpy.random.RandomState(seed)` objects:
`RandomState(i).permutation(34)[:5]` is exactly what `numpy.random.seed(i)` followed by
`numpy.random.choice(TASKS, 5, replace=False)` draws (legacy `choice` without replacement is
`permutation(n)[:size]`), and `RandomState(0).shuffle` is `seed(0); shuffle`. So the caller's global
RNG is never touched, and there is nothing to restore.
"""

from __future__ import annotations

import hashlib
import json
import os
from contextlib import suppress
from functools import lru_cache
from itertools import product
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from harness.durable_files import atomic_write_text
from harness.tasks.catalog import COLORS, STATE_KEYS, TASK_CATEGORY, TASK_NAMES
from harness.tasks.symbolic import StateTuple, SymbolicState, check_state, next_state, valid_tasks

NUM_EVAL_CHAINS = 1000
# sha256 of chains_json(eval_chains(1000)): the benchmark list, pinned (tests check the generator against it)
CHAINS_1000_SHA256 = "604957a8a2d3102941b278df07df4950bc41f340ed959077b20467d5f692318a"
CHAIN_LENGTH = 5
# Step 1 of docs/CALVIN.md#chain-generator: the values each key takes in the initial conditions, in product order.
INITIAL_VALUES: dict[str, tuple[Any, ...]] = {
    "led": (0, 1),
    "lightbulb": (0, 1),
    "slider": ("right", "left"),
    "drawer": ("closed", "open"),
    **{f"{c}_block": ("table", "slider_right", "slider_left") for c in COLORS},
    "grasped": (0,),
}
_CATEGORIES = tuple(TASK_CATEGORY[name] for name in TASK_NAMES)

Chain = tuple[dict[str, Any], tuple[str, ...]]


def _is_initial(values: tuple[Any, ...]) -> bool:
    """Step 2: one or two blocks on the table, at most one in each slider slot."""
    return values.count("table") in (1, 2) and values.count("slider_right") < 2 and values.count("slider_left") < 2


@lru_cache(maxsize=1)
def _initial_tuples() -> tuple[StateTuple, ...]:
    assert tuple(INITIAL_VALUES) == STATE_KEYS
    return tuple(v for v in product(*INITIAL_VALUES.values()) if _is_initial(v))


def initial_conditions() -> list[dict[str, Any]]:
    """CALVIN's 192 evaluation start conditions, in product order (plain int/str values)."""
    return [dict(zip(STATE_KEYS, values)) for values in _initial_tuples()]


def chains_per_condition(n: int) -> list[int]:
    """How many chains each of the 192 conditions gets for n chains: the lengths of array_split(range(n), 192)."""
    return [len(part) for part in np.array_split(range(n), len(_initial_tuples()))]


class _Walker:
    """Vectorised chain validity over a transition table of the states reachable within `depth` tasks.

    Row k of `table` holds, per task index, the id of the next state, or SINK where the task is not
    valid (exactly one transition must apply); SINK maps to itself, so a failed walk stays failed.
    """

    def __init__(self, starts: Iterable[StateTuple], depth: int) -> None:
        ids: dict[StateTuple, int] = {}
        for state in starts:
            ids.setdefault(state, len(ids))
        frontier = list(ids)
        rows: dict[int, list[StateTuple | None]] = {}
        for _ in range(depth):
            new: list[StateTuple] = []
            for state in frontier:
                row = [next_state(state, t) for t in range(len(TASK_NAMES))]
                rows[ids[state]] = row
                for nxt in row:
                    if nxt is not None and nxt not in ids:
                        ids[nxt] = len(ids)
                        new.append(nxt)
            frontier = new
        self.ids = ids
        self.sink = len(ids)
        self.table = np.full((len(ids) + 1, len(TASK_NAMES)), self.sink, dtype=np.int32)
        for k, row in rows.items():
            self.table[k] = [self.sink if nxt is None else ids[nxt] for nxt in row]

    def step(self, state: np.ndarray, seen: np.ndarray, tasks: np.ndarray) -> np.ndarray:
        """Advance walks by one task each, in place; returns which walks are still valid.

        state: (M,) state ids; seen: (M,) bit c set when a task of category c was already done
        (CALVIN's chains need 5 distinct categories).
        """
        state[:] = self.table[state, tasks]
        bit = np.left_shift(1, _CATEGORY_ARRAY[tasks])
        ok = (state != self.sink) & ((seen & bit) == 0)
        seen |= bit
        return ok


_CATEGORY_ARRAY = np.array(_CATEGORIES, dtype=np.int64)


@lru_cache(maxsize=1)
def _eval_walker() -> _Walker:
    return _Walker(_initial_tuples(), CHAIN_LENGTH)


def _swap_targets(rs: np.random.RandomState, count: int) -> np.ndarray:
    """The swap targets of `count` successive `rs.permutation(34)` draws, as (33, count) int8; row i-1 holds j_i.

    Legacy permutation(n) shuffles arange(n) with j_i = random_interval(i) for i = n-1 .. 1, a masked
    rejection sampler on 32-bit outputs. Legacy `randint(0, i + 1)` with array bounds runs the same
    sampler, so one call yields the j's of `count` permutations from the same stream position.
    """
    n = len(TASK_NAMES)
    highs = np.arange(n, 1, -1, dtype=np.int32)  # bounds i + 1 for i = n-1 .. 1, broadcast over rows
    j = rs.randint(0, highs, size=(count, n - 1), dtype=np.int32)  # filled row by row: draw order
    return j.astype(np.int8)[:, ::-1].T.copy()


def _head_value(j_by_i: np.ndarray, p: int) -> np.ndarray:
    """The value that permutation(n) leaves at position p, for each column of swap targets.

    Rather than shuffling whole rows, undo the swaps (i, j_i) in reverse order (i = 1 .. n-1) from
    position p: a slot below i is touched by swap i only when j_i points at it, and then it came from i.
    """
    pos = np.zeros(j_by_i.shape[1], dtype=np.int8) if p == 0 else j_by_i[p - 1].copy()
    for i in range(p + 1, j_by_i.shape[0] + 1):
        pos[j_by_i[i - 1] == pos] = i
    return pos


def _valid_heads(rs: np.random.RandomState, count: int, walker: _Walker, start: StateTuple) -> np.ndarray:
    """Draw `count` permutations; return the (k, 5) heads of the valid ones, in draw order.

    Heads are traced one position at a time, only for draws still valid, so most of the work is
    the first position.
    """
    j_by_i = _swap_targets(rs, count)
    alive = np.arange(count)
    state = np.full(count, walker.ids[start], dtype=np.int32)
    seen = np.zeros(count, dtype=np.int64)
    heads = np.empty((count, CHAIN_LENGTH), dtype=np.int64)
    for p in range(CHAIN_LENGTH):
        tasks = _head_value(j_by_i, p).astype(np.int64)
        ok = walker.step(state, seen, tasks)
        heads[alive, p] = tasks
        alive, j_by_i, state, seen = alive[ok], j_by_i[:, ok], state[ok], seen[ok]
    return heads[alive]


def _sample_condition(state: StateTuple, seed: int, count: int) -> list[tuple[int, ...]]:
    """Step 4: reseed with the condition's number and keep the first `count` valid draws.

    Draws come in batches sized from the hit rate so far; drawing past the last needed one is
    harmless, because every condition reseeds.
    """
    rs = np.random.RandomState(seed)
    walker = _eval_walker()
    found: list[tuple[int, ...]] = []
    drawn, batch = 0, 8192
    while len(found) < count:
        heads = _valid_heads(rs, batch, walker, state)
        found += [tuple(row) for row in heads[: count - len(found)].tolist()]
        drawn += batch
        # aim short of the expected need: every draw past the last needed one is wasted work
        rate = max(len(found), 1) / drawn
        batch = int(min(max(0.6 * (count - len(found)) / rate, 2048), 65536))
    return found


ChainItems = tuple[tuple[StateTuple, tuple[int, ...]], ...]  # (start state, task indices) per chain


def _generate_items(n: int) -> ChainItems:
    """CALVIN's generator itself, without the cache."""
    items: list[tuple[StateTuple, tuple[int, ...]]] = []
    for i, (state, count) in enumerate(zip(_initial_tuples(), chains_per_condition(n))):
        items += [(state, draw) for draw in _sample_condition(state, i, count)]
    np.random.RandomState(0).shuffle(items)  # step 5: one legacy shuffle under seed 0
    return tuple(items)


@lru_cache(maxsize=4)
def _generate(n: int) -> ChainItems:
    return _benchmark_items() if n == NUM_EVAL_CHAINS else _generate_items(n)


def chains_json(chains: list[Chain]) -> str:
    """The canonical text of a chain list (what CHAINS_1000_SHA256 is the digest of)."""
    return json.dumps([[cond, list(tasks)] for cond, tasks in chains], separators=(",", ":"))


def chain_cache_file() -> Path:
    """Where the 1000-chain list is cached: $VLA_HARNESS_CACHE, else the XDG cache folder."""
    folder = os.environ.get("VLA_HARNESS_CACHE") or Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "vla-harness"
    return Path(folder) / "calvin_eval_chains_1000.json"


def _benchmark_items() -> ChainItems:
    """The 1000-chain list from the cache when its digest checks out, else generated (and cached)."""
    path = chain_cache_file()
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError):
        text = ""
    if hashlib.sha256(text.encode()).hexdigest() == CHAINS_1000_SHA256:
        return tuple((tuple(cond[k] for k in STATE_KEYS), tuple(map(TASK_NAMES.index, tasks)))
                     for cond, tasks in json.loads(text))
    items = _generate_items(NUM_EVAL_CHAINS)
    text = chains_json(_as_chains(items))
    if hashlib.sha256(text.encode()).hexdigest() != CHAINS_1000_SHA256:
        raise RuntimeError("the generated 1000-chain list is not CALVIN's (its sha256 differs from CHAINS_1000_SHA256): "
                           "has numpy's legacy RandomState stream changed?")
    _write_cache(path, text)
    return items


def _write_cache(path: Path, text: str) -> None:
    """Atomically (a reader never sees half a file); a folder that cannot be written only costs speed."""
    with suppress(OSError):
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, text)


def _check_count(n: Any, what: str) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
        raise ValueError(f"{what} must be a non-negative int, got {n!r}")
    return int(n)


def _as_chains(items: ChainItems) -> list[Chain]:
    # fresh dicts each call, so a caller that edits a condition cannot corrupt the cache
    return [(dict(zip(STATE_KEYS, state)), tuple(TASK_NAMES[i] for i in draw)) for state, draw in items]


def eval_chains(n: int = NUM_EVAL_CHAINS) -> list[Chain]:
    """CALVIN's `get_sequences(n)`: (initial condition, 5 task names) pairs, in CALVIN's order."""
    return _as_chains(_generate(_check_count(n, "eval_chains(n)")))


def benchmark_chains(k: int = NUM_EVAL_CHAINS) -> list[Chain]:
    """The first k chains of the fixed 1000-chain list that published CALVIN evaluations use."""
    k = _check_count(k, "benchmark_chains(k)")
    if k > NUM_EVAL_CHAINS:
        raise ValueError(f"benchmark_chains(k): the benchmark list has {NUM_EVAL_CHAINS} chains, asked for {k}")
    return _as_chains(_generate(NUM_EVAL_CHAINS)[:k])


# --- random chains for data recording (numpy Generator, never the global RNG) --------------------


def random_condition(rng: np.random.Generator) -> dict[str, Any]:
    """One of the 192 evaluation start conditions, uniformly."""
    conditions = _initial_tuples()
    return dict(zip(STATE_KEYS, conditions[int(rng.integers(len(conditions)))]))


def random_chain(
    rng: np.random.Generator,
    length: int = CHAIN_LENGTH,
    condition: Mapping[str, Any] | SymbolicState | None = None,
    distinct_categories: bool = True,
) -> Chain:
    """A random valid chain, uniform over the valid ordered task tuples, as CALVIN's rejection sampling is.

    Rather than rejecting draws (hopeless for long chains), each next task is drawn with weight equal
    to the number of valid completions through it, which gives the same distribution.
    condition: a start state (any valid symbolic state); by default a random one of the 192.
    distinct_categories=False drops CALVIN's one-task-per-category rule, and with it CALVIN's no-repeat rule:
    uniform over what `is_valid_chain(..., distinct_categories=False)` accepts, a task may come back.
    ValueError when no valid chain of that length exists from the state.
    """
    if not isinstance(rng, np.random.Generator):
        raise ValueError(f"rng must be a numpy.random.Generator, got {type(rng).__name__}")
    limit = len(set(_CATEGORIES)) if distinct_categories else len(TASK_NAMES)
    if isinstance(length, bool) or not isinstance(length, int) or not 1 <= length <= limit:
        raise ValueError(f"random_chain(length): expected an int in 1..{limit}, got {length!r}")
    cond = random_condition(rng) if condition is None else dict(zip(STATE_KEYS, check_state(condition)))
    state, used = tuple(cond.values()), 0
    if _count_chains(state, used, length, distinct_categories) == 0:
        raise ValueError(f"no valid chain of length {length} exists from {cond}")
    tasks: list[str] = []
    for remaining in range(length, 0, -1):
        options = _options(state, used, distinct_categories)
        weights = [_count_chains(nxt, mask, remaining - 1, distinct_categories) for _, nxt, mask in options]
        task, state, used = options[_weighted_index(rng, weights)]
        tasks.append(TASK_NAMES[task])
    return cond, tuple(tasks)


def _options(state: StateTuple, used: int, distinct: bool) -> list[tuple[int, StateTuple, int]]:
    """(task, next state, category mask after it) for each task valid now (and of an unused category)."""
    out = []
    for task in range(len(TASK_NAMES)):
        bit = 1 << _CATEGORIES[task] if distinct else 0
        nxt = next_state(state, task)
        if nxt is not None and not used & bit:
            out.append((task, nxt, used | bit))
    return out


@lru_cache(maxsize=1 << 18)
def _count_chains(state: StateTuple, used: int, remaining: int, distinct: bool) -> int:
    """How many valid task sequences of `remaining` tasks start here (exact, Python ints)."""
    if remaining == 0:
        return 1
    return sum(_count_chains(nxt, mask, remaining - 1, distinct) for _, nxt, mask in _options(state, used, distinct))


def _weighted_index(rng: np.random.Generator, weights: list[int]) -> int:
    target = rng.random() * sum(weights)
    for k, cumulative in enumerate(np.cumsum(np.array(weights, dtype=np.float64))):
        if target < cumulative:
            return k
    return max(k for k, w in enumerate(weights) if w > 0)  # float rounding at the very top


def random_task(rng: np.random.Generator, state: Mapping[str, Any] | SymbolicState) -> str:
    """A task drawn uniformly from those valid in `state`; ValueError when none is."""
    valid = valid_tasks(state)
    if not valid:
        raise ValueError(f"no task is valid in symbolic state {dict(zip(STATE_KEYS, check_state(state)))}")
    return valid[int(rng.integers(len(valid)))]
