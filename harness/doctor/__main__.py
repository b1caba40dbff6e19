"""python -m harness.doctor CHECKPOINT [--data PATH] [--env builtin|calvin|none] [...]: check a checkpoint, its
data and the evaluation's env against each other before a long run (docs/DOCTOR.md). One line per check;
exit status 1 when any check fails, 2 when the command line is wrong."""

from __future__ import annotations

import argparse
import json
import sys

from harness.doctor.doctor import ENV_BACKENDS, DoctorConfig, run_doctor


def _option(text: str) -> tuple[str, object]:
    """KEY=VALUE read as the evaluation reads `env.options.KEY=VALUE` (hydra's override grammar: `{static:128}` is
    a mapping there, where YAML reads a key `static:128`)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    key, sep, _ = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    try:
        return key, OverridesParser.create().parse_override(text).value()
    except HydraException as e:
        raise argparse.ArgumentTypeError(f"{text!r}: {' '.join(str(e).split())}") from None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m harness.doctor", description=__doc__)
    ap.add_argument("checkpoint", help="a checkpoint folder (runs/train/NAME/checkpoints/last)")
    ap.add_argument("--data", help="dataset root (CALVIN npz or shards); default: the checkpoint's training data")
    ap.add_argument("--env", default="builtin", choices=ENV_BACKENDS, help="the evaluation's env backend (none: skip env checks)")
    ap.add_argument("--scene", default=DoctorConfig.scene, help="the evaluation's env.scene (default: %(default)s)")
    ap.add_argument("--renderer", default="tiny", help="tiny | egl")
    ap.add_argument("--env-option", nargs="+", action="extend", type=_option, default=[], metavar="KEY=VALUE",
                    help="an env option as in the evaluation's env.options (the same spelling), e.g. camera_sizes={static:200}")
    ap.add_argument("--env-factory", help="module:callable that builds the env, as the evaluation's env.factory")
    ap.add_argument("--ep-len", type=int, default=360, help="the evaluation's steps per subtask")
    ap.add_argument("--windows", type=int, default=16, help="recorded windows the model predicts on, and segments whose first frame it predicts on")
    ap.add_argument("--episodes", type=int, default=8, help="episodes read for the normaliser, sync and robot_obs checks")
    ap.add_argument("--episode-frames", type=int, default=1000, help="at most this many frames of each episode read")
    ap.add_argument("--replay-episodes", type=int, default=2)
    ap.add_argument("--replay-steps", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", action="store_true", help="print the report as JSON")
    args = ap.parse_args(argv)
    try:
        cfg = DoctorConfig(
            checkpoint=args.checkpoint, data=args.data, env=args.env, scene=args.scene, renderer=args.renderer,
            env_options=dict(args.env_option), env_factory=args.env_factory, ep_len=args.ep_len, windows=args.windows,
            episodes=args.episodes, episode_frames=args.episode_frames, replay_episodes=args.replay_episodes,
            replay_steps=args.replay_steps, device=args.device)
    except ValueError as e:
        ap.error(str(e))
    report = run_doctor(cfg)
    print(json.dumps(report.to_dict(), indent=1) if args.json else report.render())
    return report.exit_code


if __name__ == "__main__":
    sys.exit(main())
