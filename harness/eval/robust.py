"""The robustness suite: the unperturbed protocol and each perturbation axis and level on the same chains,
paired with the unperturbed run (docs/ROBUSTNESS.md).

    python -m harness.eval.robust agent=scripted num_chains=200 workers=2         (vla-harness-robust ...)
    python -m harness.eval.robust agent=vla agent.checkpoint=DIR suite.axes=[camera,language] suite.levels=[1,3]

The settings are the evaluation's (configs/robust.yaml builds on the same dataclasses; its defaults: 200
chains, no videos) plus `suite.axes` (the env's axes and `renderer`: the same chains drawn by the other
renderer, with the per-camera image difference on the same states), `suite.levels` and `suite.image_chains`.
Each row is an ordinary evaluation in a subfolder of output_dir (`unperturbed/`, `camera_1/`, ...), with
`env.perturb` (or `env.renderer`) set for it: each resumes like any evaluation, so the same command again
finishes what a killed suite left. Then output_dir gets
`robustness.md`, `robustness.csv` and `robustness.png`: avg. len with its 95 % interval per axis and level,
and the drop against the unperturbed run with the paired interval and exact test of `harness.eval.compare`.
"""

from __future__ import annotations

import csv
import json
import sys
from contextlib import closing
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

from harness.config_errors import ConfigError, config_errors, exit_on_config_error, resolve_config
from harness.durable_files import atomic_write_text
from harness.envs import CAMERA_NAMES
from harness.envs.perturbations import AXES, LEVELS, Perturbations, level_name
from harness.eval.compare import Comparison, Run, compare_runs, load_run
from harness.eval.config import EvalConfig, EvalSettings, pin_checkpoint, store_eval_defaults
from harness.eval.evaluation import run_evaluation
from harness.eval.jobs import Job, chain_jobs
from harness.eval.rollout import run_chain
from harness.eval.specs import AgentConfig, AgentSource, EnvConfig
from harness.eval.stats import Interval
from harness.eval.store import RUN_FILE
from harness.hydra_app import hydra_app, store_defaults
from harness.lifetime import sigterm_exits
from harness.strict_config import from_mapping, plain

UNPERTURBED = "unperturbed"
# A row of the suite, not a perturbation of the env: the same chains drawn by the other renderer (env.renderer
# owns the choice), with the per-camera image difference between the two on the same states.
RENDERER = "renderer"
SUITE_AXES = (*AXES, RENDERER)
OTHER_RENDERER = {"tiny": "egl", "egl": "tiny"}
IMAGE_DIFFERENCE = "image_difference.json"


@dataclass(frozen=True)
class SuiteSettings:
    """suite.*: which axes and levels the suite runs (every row on the same chains)."""

    axes: tuple[str, ...] = SUITE_AXES
    levels: tuple[int, ...] = tuple(range(1, LEVELS + 1))
    image_chains: int = 5  # the renderer row's image difference: the expert's states along this many chains

    def __post_init__(self) -> None:
        object.__setattr__(self, "axes", tuple(self.axes))
        object.__setattr__(self, "levels", tuple(self.levels))
        unknown = [a for a in self.axes if a not in SUITE_AXES]
        if unknown:
            raise ValueError(f"suite.axes: unknown axes {unknown}; the axes are {list(SUITE_AXES)}")
        bad = [level for level in self.levels if not 1 <= level <= LEVELS]
        if bad:
            raise ValueError(f"suite.levels: levels are 1..{LEVELS} (the unperturbed run is always made), got {bad}")
        if len(set(self.levels)) != len(self.levels):
            raise ValueError(f"suite.levels: each level once, got {list(self.levels)}")
        if not self.levels and any(a != RENDERER for a in self.axes):
            raise ValueError("suite.levels: empty; the axes other than the renderer need at least one level")

    def rows(self) -> list[tuple[str, int]]:
        """(axis, level) per row; the renderer has one (the other renderer), whatever the levels."""
        return [(axis, level) for axis in self.axes for level in ((1,) if axis == RENDERER else self.levels)]


def row_folder(output_dir: Path, axis: str, level: int) -> Path:
    return output_dir / f"{axis}_{level}"


def run_suite(settings: EvalSettings, env: EnvConfig, agent: AgentSource, suite: SuiteSettings, output_dir: str | Path,
              config: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Every row's evaluation (resuming what is there), then the table; returns its rows."""
    if env.perturb.any():
        raise ConfigError(f"env.perturb: the suite sets the perturbations of each row itself; got {env.perturb.active()}")
    if settings.mode != "chains":  # its table is avg. len and the paired drop over the same chains
        raise ConfigError(f"mode={settings.mode}: the robustness suite runs CALVIN's chains (mode=chains) and pairs each "
                          "row's chains with the unperturbed run's; for single-task episodes under one perturbation run "
                          "python -m harness.eval mode=single_task env.perturb.<axis>=<level>")
    if settings.instructions and "language" in suite.axes:
        raise ConfigError("instructions: the language rows reword CALVIN's instructions themselves; leave out "
                          "instructions or the language axis (suite.axes)")
    if RENDERER in suite.axes:  # an EGL that cannot start fails here, before any row runs
        try:
            replace(env, renderer=OTHER_RENDERER[env.renderer]).check()
        except ValueError as e:
            raise ConfigError(f"suite.axes: the renderer row cannot run ({e}); leave 'renderer' out of suite.axes") from e
    for axis in (a for a in suite.axes if a != RENDERER):  # a row the backend or scene cannot run fails now too
        try:
            replace(env, perturb=Perturbations(**{axis: max(suite.levels)})).check()
        except ValueError as e:
            raise ConfigError(f"suite.axes: the {axis} row cannot run ({e})") from e
    folder = Path(output_dir)
    # a link (a training's checkpoints/last) read once: every row evaluates the model it named when the suite began
    pinned = pin_checkpoint(agent).kwargs.get("checkpoint") if isinstance(agent, AgentConfig) else None
    rows = [(UNPERTURBED, 0), *suite.rows()]
    for axis, level in rows:
        sub = folder / UNPERTURBED if not level else row_folder(folder, axis, level)
        if axis == RENDERER:
            row_env = replace(env, renderer=OTHER_RENDERER[env.renderer])
            print(f"[robust] {sub.name}: renderer {row_env.renderer}", flush=True)
            run_evaluation(settings, row_env, agent, sub, config=_row_config(config, row_env), print_summary=False,
                           pinned_checkpoint=pinned)
            jobs = chain_jobs(min(suite.image_chains, settings.num_chains), settings.seed)
            made_of = json.loads(json.dumps({"chains": len(jobs), "seed": settings.seed, "ep_len": settings.ep_len,
                                             "env": env.to_dict()}))
            if settings.overwrite or _made_of(sub / IMAGE_DIFFERENCE) != made_of:  # measured again when stale
                difference = {**image_difference(env, row_env, jobs, settings.ep_len), "made_of": made_of}
                atomic_write_text(sub / IMAGE_DIFFERENCE, json.dumps(difference, indent=1) + "\n")
            continue
        perturb = Perturbations(**({axis: level} if level else {}))
        print(f"[robust] {sub.name}: {perturb.describe() or 'unperturbed'}", flush=True)
        row_env = replace(env, perturb=perturb)
        run_evaluation(settings, row_env, agent, sub, config=_row_config(config, row_env), print_summary=False,
                       pinned_checkpoint=pinned)
    table = robustness_table(folder, suite, {job.key for job in settings.jobs()})
    write_table(folder, table)
    return table


def _made_of(path: Path) -> dict[str, Any] | None:
    """The settings an image difference was measured with (None: not measured yet)."""
    return json.loads(path.read_text()).get("made_of") if path.exists() else None


def _row_config(config: dict[str, Any] | None, env: EnvConfig) -> dict[str, Any] | None:
    """The row's resolved config as its own evaluation would have it (env.perturb or env.renderer set, no suite)."""
    if config is None:
        return None
    row = {k: v for k, v in config.items() if k != "suite"}
    row["env"] = {**row["env"], "renderer": env.renderer, "perturb": plain(env.perturb)}
    return row


def image_difference(a: EnvConfig, b: EnvConfig, jobs: list[Job], ep_len: int, every: int = 20) -> dict[str, Any]:
    """How differently envs `a` and `b` (two renderers) draw the same states: the scripted expert's states
    along `jobs`, every `every`-th step, restored in both. Per camera: the mean absolute RGB difference
    (0-255) and the median absolute depth difference (m), each averaged over the states."""
    from agents import make_agent

    states = []
    with closing(a.build()) as blind:
        expert = make_agent("scripted")
        expert.bind_env(blind.description)
        for job in jobs:
            for trace in run_chain(blind, expert, job, ep_len, record=True).traces:
                states += list(zip(trace.robot_obs, trace.scene_obs))[::every]
    # One env at a time: calvin_env must be its process's first PyBullet client (harness.envs.calvin), so two
    # of them cannot be open together; the built-in scene does not care.
    images_a = render_states(a, states)
    rgb: dict[str, list[float]] = {}
    depth: dict[str, list[float]] = {}
    for (rgb_a, depth_a), (rgb_b, depth_b) in zip(images_a, render_states(b, states)):
        for name, image in rgb_a.items():
            rgb.setdefault(name, []).append(float(np.abs(image.astype(np.int16) - rgb_b[name]).mean()))
        for name, d in depth_a.items():
            depth.setdefault(name, []).append(float(np.median(np.abs(d - depth_b[name]))))
    return {"renderers": [a.renderer, b.renderer], "chains": len(jobs), "states": len(states), "every": every,
            "rgb_mean_abs": {k: float(np.mean(v)) for k, v in rgb.items()},
            "depth_median_abs_m": {k: float(np.mean(v)) for k, v in depth.items()}}


def render_states(env_cfg: EnvConfig, states: list[tuple[np.ndarray, np.ndarray]]) -> list[tuple[dict, dict]]:
    """Both cameras' RGB and depth images of each (robot_obs, scene_obs) state, in an env of `env_cfg`."""
    with closing(env_cfg.build(cameras=CAMERA_NAMES)) as env:
        out = []
        for robot_obs, scene_obs in states:
            obs = env.reset(robot_obs=robot_obs, scene_obs=scene_obs)
            out.append(({k: v.copy() for k, v in obs["rgb_obs"].items()}, {k: v.copy() for k, v in obs["depth_obs"].items()}))
        return out


def robustness_table(folder: Path, suite: SuiteSettings, chains: set[str]) -> list[dict[str, Any]]:
    """A row per axis and level: avg. len and its interval, and the paired drop against the unperturbed run,
    both over `chains` (the job keys of this num_chains: a rerun with fewer reports a prefix, and its drop is
    over that prefix too)."""
    base = _only(load_run(folder / UNPERTURBED, "A"), chains)
    rows = [_row(UNPERTURBED, 0, base, None)]
    for axis, level in suite.rows():
        run = _only(load_run(row_folder(folder, axis, level), "B"), chains)
        comparison = compare_runs(base, run, allow_mismatch=True)
        expected = {"language": ("env.perturb", "protocol.instructions"), RENDERER: ("env.renderer",)}.get(axis, ("env.perturb",))
        other = [k for k, _, _ in comparison.mismatches if not k.startswith(expected)]
        if other:
            raise ValueError(f"{run.path} and {base.path} differ in more than the perturbation: {other}")
        if _weights(run.path) != _weights(base.path):  # compare leaves the model out: it is what it compares
            raise ValueError(f"{run.path} evaluated other weights than {base.path} (run.json `weights`): a row per "
                             "model is no robustness table; name the checkpoint's step folder, not a link training moves")
        rows.append(_row(axis, level, run, comparison))
    return rows


def _weights(folder: Path) -> str | None:
    """The digest of the checkpoint a row evaluated (None for an agent without one)."""
    return json.loads((folder / RUN_FILE).read_text()).get("weights")


def _only(run: Run, chains: set[str]) -> Run:
    return replace(run, records={k: v for k, v in run.records.items() if k in chains})


def _amount(axis: str, level: int, run: Any) -> str:
    if axis != RENDERER:
        return level_name(axis, level) if level else ""
    config = json.loads((run.path / "run.json").read_text())["env"]
    return f"{config['renderer']} (unperturbed: {OTHER_RENDERER[config['renderer']]})"


def _row(axis: str, level: int, run: Any, comparison: Comparison | None) -> dict[str, Any]:
    results = _results(run.path)
    interval = results["intervals"]["avg_seq_len"] or {"low": None, "high": None}
    row = {"axis": axis, "level": level, "amount": _amount(axis, level, run),
           "chains": results["num_chains"], "avg_len": results["avg_seq_len"],
           "avg_len_low": interval["low"], "avg_len_high": interval["high"],
           "drop": None, "drop_low": None, "drop_high": None, "p": None, "paired": None}
    if comparison is not None:
        m = comparison.main  # B - A; the drop is A - B (+ 0.0: no "-0.00" where nothing changed)
        interval = m.interval or Interval(m.difference, m.difference)
        row.update(drop=-m.difference + 0.0, drop_low=-interval.high + 0.0, drop_high=-interval.low + 0.0,
                   paired=m.n, p=m.p_value)
    return row


def _results(folder: Path) -> dict[str, Any]:
    return json.loads((folder / "results.json").read_text())


def _number(x: float | None, fmt: str = ".3f") -> str:
    return "-" if x is None else f"{x:{fmt}}"


def table_markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["# Robustness suite", "",
             "Avg. len with its 95 % interval (BCa bootstrap over chains); the drop is unperturbed minus perturbed "
             "over the paired chains, with its 95 % interval (BCa bootstrap of the paired differences) and the "
             "exact paired sign-flip test's p (harness.eval.compare; docs/EVALUATION.md, \"Comparing runs\").", "",
             "| axis | level | amount | chains | avg. len | 95 % CI | drop | 95 % CI | p | paired |",
             "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        ci = f"[{_number(r['avg_len_low'], '.2f')}, {_number(r['avg_len_high'], '.2f')}]"
        drop_ci = "" if r["drop"] is None else f"[{r['drop_low']:+.2f}, {r['drop_high']:+.2f}]"
        drop = "" if r["drop"] is None else f"{r['drop']:+.2f}"
        p = "" if r["p"] is None else f"{r['p']:.2g}"
        lines.append(f"| {r['axis']} | {r['level']} | {r['amount']} | {r['chains']} | {r['avg_len']:.3f} | {ci} | "
                     f"{drop} | {drop_ci} | {p} | {'' if r['paired'] is None else r['paired']} |")
    return "\n".join(lines) + "\n"


def image_difference_markdown(folder: Path) -> str:
    """The renderer row's image difference, when the suite has that row."""
    path = row_folder(folder, RENDERER, 1) / IMAGE_DIFFERENCE
    if not path.exists():
        return ""
    d = json.loads(path.read_text())
    cameras = ", ".join(f"{name.removeprefix('rgb_')} {value:.1f}" for name, value in d["rgb_mean_abs"].items())
    depth = ", ".join(f"{name.removeprefix('depth_')} {value * 1000:.1f} mm" for name, value in d["depth_median_abs_m"].items())
    return (f"\nImages of renderer {d['renderers'][0]} vs {d['renderers'][1]} on the same {d['states']} states (the "
            f"scripted expert's, every {d['every']}th step of {d['chains']} chains): mean absolute RGB difference "
            f"(0-255) {cameras}; median absolute depth difference {depth}.\n")


def write_table(folder: Path, rows: list[dict[str, Any]]) -> None:
    markdown = table_markdown(rows) + (image_difference_markdown(folder) if any(r["axis"] == RENDERER for r in rows) else "")
    (folder / "robustness.md").write_text(markdown)
    with open(folder / "robustness.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot_table(rows, folder / "robustness.png")
    print(markdown + f"\nwritten: {folder / 'robustness.md'}, robustness.csv, robustness.png", flush=True)


def plot_table(rows: list[dict[str, Any]], path: Path) -> None:
    """Avg. len against level per axis, with the intervals; level 0 is the unperturbed run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    base = rows[0]
    axes = list(dict.fromkeys(r["axis"] for r in rows[1:]))
    fig, ax = plt.subplots(figsize=(8, 4), dpi=120)
    for k, name in enumerate(axes):
        points = [base] + [r for r in rows if r["axis"] == name]
        x = [r["level"] + (k - (len(axes) - 1) / 2) * 0.04 for r in points]
        y = [r["avg_len"] for r in points]
        low = [r["avg_len"] - (r["avg_len_low"] if r["avg_len_low"] is not None else r["avg_len"]) for r in points]
        high = [(r["avg_len_high"] if r["avg_len_high"] is not None else r["avg_len"]) - r["avg_len"] for r in points]
        ax.errorbar(x, y, yerr=[low, high], marker="o", ms=4, capsize=3, label=name)
    ax.set(xlabel="level (0 = unperturbed)", ylabel="avg. len, 95 % CI", ylim=(-0.1, 5.15),
           title=f"robustness ({base['chains']} chains per row)")
    ax.set_xticks(range(0, LEVELS + 1))
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


@hydra_app("robust")
def _suite(cfg: DictConfig) -> None:
    sigterm_exits()
    with exit_on_config_error("harness.eval.robust"):
        resolved = resolve_config(cfg)
        with config_errors():
            suite = from_mapping(SuiteSettings, resolved.get("suite", {}), "suite")
            config = EvalConfig.from_dict({k: v for k, v in resolved.items() if k != "suite"})
        run_suite(config.settings, config.env, config.agent, suite, config.output_dir, config=resolved)


def main() -> None:
    store_eval_defaults()
    store_defaults("robust_suite", {"suite": plain(SuiteSettings())})
    _suite()


if __name__ == "__main__":
    sys.exit(main())
