"""The argument convention of the project's tools (argparse command lines), in one place.

    python -m harness.record OUT --scene D --episodes 200 --tasks open_drawer close_drawer --workers 8

Paths come first, as positional arguments; every other setting is an option `--words-with-dashes VALUE`;
an option with several values takes them one after another (commas separate them too:
`--tasks open_drawer,close_drawer`); a flag (`--quick`) takes no value. The hydra apps
(`python -m harness.eval`, `harness.eval.robust`, `harness.train`, `harness.serve`) take `key=value` overrides
instead (`workers=8`, `env.scene=D`), as hydra does.
"""

from __future__ import annotations

import argparse
from typing import Any, Iterable


def several(values: Iterable[str] | None) -> tuple[str, ...] | None:
    """An option's values, commas splitting them too: ["a,b", "c"] -> ("a", "b", "c"); None stays None."""
    if values is None:
        return None
    return tuple(v for value in values for v in (part.strip() for part in value.split(",")) if v)


def renamed(parser: argparse.ArgumentParser, old: str, new: str) -> None:
    """`old` is no longer an option: using it is an error that names `new` (hidden from --help)."""

    class Renamed(argparse.Action):
        def __call__(self, p: argparse.ArgumentParser, ns: argparse.Namespace, values: Any, option: str | None = None) -> None:
            p.error(f"{old} is now {new}")

    parser.add_argument(old, nargs="*", action=Renamed, help=argparse.SUPPRESS)
