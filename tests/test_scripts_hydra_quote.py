"""scripts/_hydra.sh: `hq` keeps a path one literal hydra override value. The scripts pasted paths into overrides as
they were, so an OUT with `,` (a sweep's list), `(`, `=`, `[`, a quote or `${` broke the command or changed it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
HQ = ROOT / "scripts" / "_hydra.sh"


def hq(value: str) -> str:
    return subprocess.run(["bash", "-c", f'source "{HQ}" && hq "$1"', "_", value], capture_output=True, text=True,
                          check=True).stdout


def as_hydra_reads_it(override_value: str) -> str:
    """The value a `key=<override_value>` override puts in the resolved config."""
    value = OverridesParser.create().parse_override(f"output_dir={override_value}").value()
    return OmegaConf.to_container(OmegaConf.create({"output_dir": value}), resolve=True)["output_dir"]


@pytest.mark.parametrize("path", ["runs/a,b", "runs/x (1)", "runs/k=v", "runs/[a]{b}", "runs/it's", r"runs/back\slash",
                                  "runs/end\\", r"runs/q\'uote", "runs/${oc.env:HOME}", "runs/two spaces  x", "plain"])
def test_the_value_is_the_path(path):
    assert as_hydra_reads_it(hq(path)) == path


def test_an_evaluation_writes_to_the_folder_named(tmp_path):
    out = tmp_path / "eval, the (first) one=1 [it's] ${x}"
    script = (f'source "{HQ}" && "{sys.executable}" -m harness.eval agent=random num_chains=1 ep_len=2 workers=0 '
              'videos=0 video_failures=0 progress=false output_dir="$(hq "$1")"')
    proc = subprocess.run(["bash", "-c", script, "_", str(out)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads((out / "results.json").read_text())["num_chains"] == 1
