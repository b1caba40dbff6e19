"""`python -m harness.eval compare` on real evaluation folders: the scripted expert against the same expert
faltering on known chains (tests.eval_agents.FalteringExpert), evaluated on the built-in scene.

Run A: the expert on CALVIN's first 8 chains. Run B: it falters at the first subtask of chains 0-5, so each
of those chains loses all it completed in A and chains 6-7 are the same. Run C: 3 chains, faltering at the
third subtask of chain 0. The expected difference, its exact p-value (by enumerating sign flips) and the
verdicts follow from A's records."""

from __future__ import annotations

import itertools
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.eval import AgentConfig, evaluate_chains
from harness.eval.compare import load_run, main

ROOT = Path(__file__).resolve().parents[1]
FACTORY = "tests.eval_agents:FalteringExpert"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("compare")
    settings = {
        "expert": (AgentConfig("scripted"), 8),
        "falter6": (AgentConfig(factory=FACTORY, kwargs={"falter": {i: 1 for i in range(6)}}), 8),
        "falter1": (AgentConfig(factory=FACTORY, kwargs={"falter": {0: 3}}), 3),
    }
    for name, (agent, chains) in settings.items():
        evaluate_chains(agent, num_chains=chains, workers=0, output_dir=root / name)
    return {name: root / name for name in settings}


def completed(run: Path) -> dict[int, int]:
    return {r["index"]: r["completed"] for r in map(json.loads, (run / "results.jsonl").read_text().splitlines())}


def exact_p(differences: list[int]) -> float:
    nonzero = [d for d in differences if d]
    flips = list(itertools.product((1, -1), repeat=len(nonzero)))
    return sum(abs(sum(s * d for s, d in zip(f, nonzero))) >= abs(sum(differences)) for f in flips) / len(flips)


def compare(*args: str | Path) -> tuple[int, dict]:
    out = Path(args[-1])
    rc = main([str(a) for a in args[:-1]] + ["--out", str(out), "--resamples", "2000"])
    return rc, (json.loads((out / "compare.json").read_text()) if rc == 0 else {})


def test_known_chain_differences_give_the_expected_difference_interval_and_verdict(runs, tmp_path):
    a = completed(runs["expert"])
    assert all(a[i] >= 1 for i in range(6)), "the expert completes at least one subtask of these chains"
    assert completed(runs["falter6"]) == {i: (0 if i < 6 else a[i]) for i in range(8)}  # differs in the known chains only

    rc, result = compare(runs["expert"], runs["falter6"], tmp_path / "ab")
    assert rc == 0
    c = result["comparisons"][0]
    differences = [-a[i] if i < 6 else 0 for i in range(8)]
    assert c["paired"] == 8 and c["difference"]["difference"] == pytest.approx(sum(differences) / 8)
    assert c["difference"]["p_value"] == pytest.approx(exact_p(differences))  # 2 / 2^6 = 0.031
    low, high = c["difference"]["interval"]["low"], c["difference"]["interval"]["high"]
    assert -5 <= low < sum(differences) / 8 < high < 0
    assert c["in_a_row"]["1"]["difference"] == pytest.approx(-6 / 8)
    assert c["tasks"][next(iter(c["tasks"]))]["a"]["total"] > 0
    verdict = result["verdicts"][0]
    assert verdict.startswith(f"B (falter6) is worse than A (expert) by {-sum(differences) / 8:.2f} avg. len, 95 % CI "
                              f"{-high:.2f} to {-low:.2f}")
    assert (tmp_path / "ab" / "compare.md").read_text().count(verdict) == 1 and (tmp_path / "ab" / "compare.png").stat().st_size > 10_000

    rc, result = compare(runs["falter6"], runs["expert"], tmp_path / "ba")  # the other way round
    assert result["verdicts"][0].startswith(f"B (expert) is better than A (falter6) by {-sum(differences) / 8:.2f} avg. len")


def test_several_runs_are_each_compared_with_the_first_on_the_chains_they_share(runs, tmp_path):
    rc, result = compare(runs["expert"], runs["falter6"], runs["falter1"], tmp_path / "abc")
    assert rc == 0 and [c["b"] for c in result["comparisons"]] == [str(runs["falter6"]), str(runs["falter1"])]
    a = completed(runs["expert"])
    c = result["comparisons"][1]
    assert c["paired"] == 3  # falter1 ran 3 of the 8 chains
    assert c["difference"]["difference"] == pytest.approx(-(a[0] - 2) / 3)
    assert a[0] > 2 and c["difference"]["p_value"] == 1.0  # one chain differs: either sign is as likely
    assert result["verdicts"][1].startswith("No significant difference between C (falter1) and A (expert)")
    assert "Each run is compared with the first, A (expert)." in (tmp_path / "abc" / "compare.md").read_text()


def test_chains_needed(runs, tmp_path, capsys):
    assert main([str(runs["expert"]), str(runs["falter6"]), "--out", str(tmp_path), "--chains-needed", "--detect", "0.1"]) == 0
    lines = json.loads((tmp_path / "compare.json").read_text())["chains_needed"]
    assert lines[0].startswith("Chains needed (B vs A): to detect a difference of 0.10 avg. len (given) at 95 % confidence "
                               "with 80 % power:")
    assert "more than CALVIN's 1000 chains" in lines[0]  # differences of 0 or -5 spread widely: 0.1 is out of reach
    assert "Chains needed" in capsys.readouterr().out


def edited_copy(run: Path, to: Path, file: str, edit) -> Path:
    shutil.copytree(run, to)
    path = to / file
    if file.endswith(".jsonl"):
        records = [json.loads(line) for line in path.read_text().splitlines()]
        edit(records)
        path.write_text("".join(json.dumps(r) + "\n" for r in records))
    else:
        data = json.loads(path.read_text())
        edit(data)
        path.write_text(json.dumps(data))
    return to


def test_other_protocols_are_refused_naming_the_setting(runs, tmp_path, capsys):
    short = edited_copy(runs["falter1"], tmp_path / "ep_len_120", "run.json", lambda d: d.update(ep_len=120))
    assert main([str(runs["expert"]), str(short), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "ep_len: 360 (A) vs 120 (B)" in err and "--allow-protocol-mismatch" in err and not (tmp_path / "x").exists()

    def other_scene(d: dict) -> None:
        d["env"]["scene"] = "A"

    scene = edited_copy(runs["falter1"], tmp_path / "scene_a", "run.json", other_scene)
    assert main([str(runs["expert"]), str(scene), "--out", str(tmp_path / "y")]) == 2
    assert "env.scene: 'D' (A) vs 'A' (B)" in capsys.readouterr().err

    def other_chain(records: list) -> None:
        records[0]["tasks"] = list(reversed(records[0]["tasks"]))

    chains = edited_copy(runs["falter1"], tmp_path / "other_chain", "results.jsonl", other_chain)
    assert main([str(runs["expert"]), str(chains), "--out", str(tmp_path / "z")]) == 2
    assert "chain/0 tasks" in capsys.readouterr().err

    # the folder a checkpoint link named, its digest and the dtype a VLA's `dtype: auto` became (run.json's
    # "checkpoint", "weights", "precision": the last only in a VLA's run) are what is compared, not the protocol
    linked = edited_copy(runs["falter1"], tmp_path / "linked", "run.json",
                         lambda d: d.update(checkpoint="step_0000004", weights="aa", precision="bfloat16"))
    assert compare(runs["expert"], linked, tmp_path / "linked_out")[0] == 0

    rc, result = compare(runs["expert"], short, "--allow-protocol-mismatch", tmp_path / "allowed")
    assert rc == 0 and result["comparisons"][0]["protocol_mismatches"] == [{"setting": "ep_len", "a": 360, "b": 120}]
    assert result["verdicts"][0].endswith("PROTOCOLS DIFFER (--allow-protocol-mismatch)")


def test_bad_folders_are_named(tmp_path, runs, capsys):
    assert main([str(runs["expert"]), str(tmp_path / "missing"), "--out", str(tmp_path / "o")]) == 2
    assert f"{tmp_path / 'missing'}: no such folder" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([str(runs["expert"]), str(tmp_path / "empty"), "--out", str(tmp_path / "o")]) == 2
    assert "no run.json" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([str(runs["expert"])])
    assert load_run(runs["expert"], "A").agent == "scripted"


def test_the_eval_command_dispatches_compare(runs, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "harness.eval", "compare", str(runs["expert"]), str(runs["falter6"]),
                           "--out", str(tmp_path / "cli"), "--resamples", "500"],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "B (falter6) is worse than A (expert)" in proc.stdout and (tmp_path / "cli" / "compare.png").is_file()


def test_single_task_runs_are_paired_episode_by_episode(tmp_path):
    """The expert against the LED button presser on 6 episodes each of turn_on_led and open_drawer: the presser
    loses exactly the 6 open_drawer episodes, so the success rate drops by 50 points with p = 2 / 2^6."""
    from harness.eval import evaluate_single_tasks

    agents = {"expert": AgentConfig("scripted"),
              "presser": AgentConfig(factory="tests.eval_agents:make_button_presser")}
    for name, agent in agents.items():
        evaluate_single_tasks(agent, tasks=["turn_on_led", "open_drawer"], episodes_per_task=6, ep_len=120, output_dir=tmp_path / name)
    rc, result = compare(tmp_path / "expert", tmp_path / "presser", "--chains-needed", tmp_path / "out")
    c = result["comparisons"][0]
    assert rc == 0 and c["unit"] == "episodes" and c["paired"] == 12
    assert c["difference"]["difference"] == pytest.approx(-0.5) and c["difference"]["p_value"] == pytest.approx(2 / 2**6)
    assert c["tasks"]["open_drawer"]["difference"] == -1.0 and c["tasks"]["turn_on_led"]["difference"] == 0.0
    assert result["verdicts"][0].startswith("B (presser) is worse than A (expert) by 50.0 percentage points of success rate")
    assert result["chains_needed"][0].startswith("Episodes needed (B vs A)")


def test_an_unfinished_run_is_compared_by_its_run_json(runs, tmp_path):
    """A run still going (or killed) has no results.json: what only results.json says is not held against it."""
    unfinished = tmp_path / "unfinished"
    shutil.copytree(runs["falter1"], unfinished)
    (unfinished / "results.json").unlink()
    rc, result = compare(runs["expert"], unfinished, tmp_path / "out")
    assert rc == 0 and result["comparisons"][0]["protocol_mismatches"] == []
