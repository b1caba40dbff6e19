"""CALVIN's evaluation chains (docs/CALVIN.md#chain-generator) and the random chains used for recording."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from itertools import product

import numpy as np
import pytest

from harness.tasks import (
    TASK_CATEGORY,
    TASK_NAMES,
    TASKS,
    benchmark_chains,
    eval_chains,
    initial_conditions,
    is_valid_chain,
    random_chain,
    random_task,
    valid_tasks,
)
from harness.tasks import chains as chains_module
from harness.tasks.chains import (
    CHAINS_1000_SHA256,
    _as_chains,
    _generate_items,
    _sample_condition,
    chain_cache_file,
    chains_json,
    chains_per_condition,
)

FIRST_CHAIN = (
    {"led": 1, "lightbulb": 1, "slider": "left", "drawer": "open", "red_block": "slider_left",
     "blue_block": "table", "pink_block": "slider_right", "grasped": 0},
    ("rotate_blue_block_right", "move_slider_right", "lift_red_block_slider", "place_in_slider",
     "turn_off_lightbulb"),
)


@pytest.fixture(scope="module")
def items() -> tuple:
    return _generate_items(1000)  # the generator itself, never the cache


@pytest.fixture(scope="module")
def chains(items) -> list:
    return _as_chains(items)


# --- a literal, slow transcription of docs/CALVIN.md#chain-generator, with the legacy global RNG as CALVIN ---

def _reference_valid(cond: dict, seq) -> bool:
    state = dict(cond)
    for name in seq:
        spec = TASKS[TASK_NAMES.index(name)]
        applicable = [t for t in spec.transitions if t.applies(state)]
        if len(applicable) != 1:
            return False
        state.update(applicable[0].effect)
    return len({TASK_CATEGORY[n] for n in seq}) == len(seq)


def _reference_condition(cond: dict, i: int, count: int) -> list[tuple[str, ...]]:
    np.random.seed(i)
    found = []
    while len(found) < count:
        seq = np.random.choice(TASK_NAMES, size=5, replace=False)
        if _reference_valid(cond, seq):
            found.append(tuple(str(s) for s in seq))
    return found


def _reference_sequences(n: int) -> list:
    values = {"led": [0, 1], "lightbulb": [0, 1], "slider": ["right", "left"], "drawer": ["closed", "open"],
              "red_block": ["table", "slider_right", "slider_left"], "blue_block": ["table", "slider_right", "slider_left"],
              "pink_block": ["table", "slider_right", "slider_left"], "grasped": [0]}
    keep = [v for v in product(*values.values())
            if v.count("table") in (1, 2) and v.count("slider_right") < 2 and v.count("slider_left") < 2]
    conds = [dict(zip(values, v)) for v in keep]
    counts = [len(a) for a in np.array_split(range(n), len(conds))]
    out = []
    for i, (cond, count) in enumerate(zip(conds, counts)):
        out += [(cond, seq) for seq in _reference_condition(cond, i, count)]
    np.random.seed(0)
    np.random.shuffle(out)
    return out


@pytest.fixture
def restore_global_rng():
    state = np.random.get_state()
    yield
    np.random.set_state(state)


# --- the benchmark list ---------------------------------------------------------------------------

def test_first_chain(chains):
    assert chains[0] == FIRST_CHAIN


def test_digest_of_the_1000_list(chains):
    text = json.dumps([[cond, list(tasks)] for cond, tasks in chains], separators=(",", ":"))
    assert chains_json(chains) == text
    assert hashlib.sha256(text.encode()).hexdigest() == CHAINS_1000_SHA256


def test_first_task_counts_and_coverage(chains):
    firsts = Counter(tasks[0] for _, tasks in chains)
    assert (firsts["open_drawer"], firsts["move_slider_right"], firsts["push_into_drawer"]) == (115, 87, 15)
    assert {t for _, tasks in chains for t in tasks} == set(TASK_NAMES)


def test_every_chain_is_valid(chains):
    for cond, tasks in chains:
        assert len(tasks) == 5
        assert len({TASK_CATEGORY[t] for t in tasks}) == 5
        assert is_valid_chain(cond, tasks)


def test_per_condition_split(chains):
    conditions = initial_conditions()
    assert len(conditions) == 192
    per = Counter(json.dumps(c) for c, _ in chains)
    assert [per[json.dumps(c)] for c in conditions] == [6] * 40 + [5] * 152
    assert chains_per_condition(1000) == [6] * 40 + [5] * 152


def test_conditions_are_plain_python(chains):
    for cond, tasks in chains[:50]:
        assert list(cond) == ["led", "lightbulb", "slider", "drawer", "red_block", "blue_block", "pink_block", "grasped"]
        assert all(type(v) in (int, str) for v in cond.values())
        assert all(type(t) is str for t in tasks)


@pytest.mark.parametrize("i", [0, 1, 77, 191])
def test_fast_sampler_matches_literal_global_rng_calls(i, restore_global_rng):
    cond = initial_conditions()[i]
    expected = _reference_condition(cond, i, 6)
    got = _sample_condition(tuple(cond.values()), i, 6)
    assert [tuple(TASK_NAMES[k] for k in seq) for seq in got] == expected


def test_eval_chains_n_is_get_sequences_n(restore_global_rng):
    """For n != 1000 CALVIN's list differs from a prefix: the split (and so the draws) change."""
    assert eval_chains(9) == [(c, s) for c, s in _reference_sequences(9)]
    assert eval_chains(9) != benchmark_chains(9)


def test_benchmark_chains_is_a_prefix(chains):
    assert benchmark_chains(12) == chains[:12]
    assert benchmark_chains() == chains
    assert benchmark_chains(0) == []


def test_results_are_copies(chains):
    first = eval_chains(1000)
    first[0][0]["led"] = 7
    assert eval_chains(1000)[0] == FIRST_CHAIN


def test_global_rng_is_untouched():
    np.random.seed(123)
    expected = np.random.RandomState(123).random_sample(3)
    eval_chains(5)
    random_chain(np.random.default_rng(0))
    assert np.array_equal(np.random.random_sample(3), expected)


@pytest.mark.parametrize("bad", [-1, 1.5, "10", None, True])
def test_bad_counts_raise(bad):
    with pytest.raises(ValueError, match="non-negative int"):
        eval_chains(bad)
    with pytest.raises(ValueError):
        benchmark_chains(bad)


def test_benchmark_has_only_1000():
    with pytest.raises(ValueError, match="1000"):
        benchmark_chains(1001)


# --- the cached 1000-chain list -------------------------------------------------------------------

@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty cache folder of its own, and no list in memory before or after."""
    monkeypatch.setenv("VLA_HARNESS_CACHE", str(tmp_path / "cache"))
    chains_module._generate.cache_clear()
    yield tmp_path / "cache" / "calvin_eval_chains_1000.json"
    chains_module._generate.cache_clear()


def _generator_counting(monkeypatch, items) -> list:
    calls = []
    monkeypatch.setattr(chains_module, "_generate_items", lambda n: calls.append(n) or items)
    return calls


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_benchmark_list_is_cached_as_json_and_read_back(cache, monkeypatch, items, chains):
    calls = _generator_counting(monkeypatch, items)
    assert benchmark_chains() == chains and calls == [1000]
    assert chain_cache_file() == cache and _digest(cache) == CHAINS_1000_SHA256
    assert json.loads(cache.read_text())[0] == [FIRST_CHAIN[0], list(FIRST_CHAIN[1])]
    chains_module._generate.cache_clear()  # a later start
    assert benchmark_chains() == chains and eval_chains(1000) == chains and calls == [1000]


@pytest.mark.parametrize("damage", ["truncated", "edited", "not_utf8", "empty"])
def test_a_corrupt_or_edited_cache_is_generated_afresh(cache, monkeypatch, items, chains, damage):
    text = chains_json(chains)
    cache.parent.mkdir(parents=True)
    cache.write_bytes({
        "truncated": text[: len(text) // 2].encode(),
        "edited": text.replace("open_drawer", "close_drawer", 1).encode(),  # still valid JSON, a different list
        "not_utf8": b"\xff\xfe" + text.encode(),
        "empty": b"",
    }[damage])
    calls = _generator_counting(monkeypatch, items)
    assert benchmark_chains() == chains and calls == [1000]
    assert _digest(cache) == CHAINS_1000_SHA256


def test_a_generated_list_that_is_not_calvins_is_refused_and_not_cached(cache, monkeypatch, items):
    _generator_counting(monkeypatch, items[1:] + items[:1])
    with pytest.raises(RuntimeError, match="CHAINS_1000_SHA256"):
        benchmark_chains(5)
    assert not cache.exists()


def test_an_unwritable_cache_folder_only_costs_speed(tmp_path, monkeypatch, items, chains):
    (tmp_path / "a_file").write_text("")
    monkeypatch.setenv("VLA_HARNESS_CACHE", str(tmp_path / "a_file" / "cache"))
    chains_module._generate.cache_clear()
    _generator_counting(monkeypatch, items)
    try:
        assert benchmark_chains(3) == chains[:3]
    finally:
        chains_module._generate.cache_clear()
    assert list(tmp_path.iterdir()) == [tmp_path / "a_file"]


def test_the_cache_folder_follows_xdg_and_home(tmp_path, monkeypatch):
    monkeypatch.delenv("VLA_HARNESS_CACHE", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert chain_cache_file() == tmp_path / "xdg" / "vla-harness" / "calvin_eval_chains_1000.json"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert chain_cache_file() == tmp_path / "home" / ".cache" / "vla-harness" / "calvin_eval_chains_1000.json"


# --- random chains for recording ------------------------------------------------------------------

def test_random_chain_is_valid_and_reproducible():
    a = [random_chain(np.random.default_rng(s)) for s in range(10)]
    b = [random_chain(np.random.default_rng(s)) for s in range(10)]
    assert a == b
    assert len({tasks for _, tasks in a}) == 10
    for cond, tasks in a:
        assert cond in initial_conditions()
        assert is_valid_chain(cond, tasks)


def test_random_chain_from_a_given_state():
    cond = FIRST_CHAIN[0]
    rng = np.random.default_rng(5)
    for length in (1, 3, 8):
        got_cond, tasks = random_chain(rng, length=length, condition=cond)
        assert got_cond == cond and len(tasks) == length
        assert is_valid_chain(cond, tasks)
    _, loose = random_chain(rng, length=12, condition=cond, distinct_categories=False)
    assert is_valid_chain(cond, loose, distinct_categories=False)


def test_random_chain_bad_input():
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="Generator"):
        random_chain(np.random.RandomState(0))
    with pytest.raises(ValueError, match="length"):
        random_chain(rng, length=12)
    with pytest.raises(ValueError, match="red_block"):
        random_chain(rng, condition={**FIRST_CHAIN[0], "red_block": "floor"})
    stuck = {**FIRST_CHAIN[0], "red_block": "grasped", "blue_block": "grasped", "grasped": 1}
    with pytest.raises(ValueError, match="no valid chain of length 3 exists"):
        random_chain(rng, length=3, condition=stuck)


def test_random_chain_is_uniform_over_valid_chains():
    """Same distribution as CALVIN's rejection sampling: every valid 2-task chain about equally often."""
    cond = FIRST_CHAIN[0]
    valid = [(a, b) for a in TASK_NAMES for b in TASK_NAMES if a != b and is_valid_chain(cond, (a, b))]
    rng = np.random.default_rng(11)
    counts = Counter(random_chain(rng, length=2, condition=cond)[1] for _ in range(40 * len(valid)))
    assert set(counts) == set(valid)
    assert max(counts.values()) < 2.2 * min(counts.values())


def test_random_task():
    rng = np.random.default_rng(3)
    cond = FIRST_CHAIN[0]
    drawn = {random_task(rng, cond) for _ in range(200)}
    assert drawn == set(valid_tasks(cond))
