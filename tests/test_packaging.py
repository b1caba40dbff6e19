"""An installed copy works: a wheel built from the working tree holds every config, and in a new virtual
environment, from a folder outside the repository, its console commands find them and evaluate.

The new environment gets the installed dependencies (torch, hydra, pybullet, ...) from this test's own
environment through a .pth file; the project itself comes from the wheel alone (the test checks where
`harness` is imported from).
"""

from __future__ import annotations

import configparser
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def working_tree(dest: Path) -> Path:
    """The files git tracks (or would track) in the working tree, copied: a build never sees stale outputs."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT, capture_output=True,
                            check=True).stdout.decode().split("\0")
    for name in filter(None, listed):
        src = ROOT / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def run(cmd: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, " ".join(cmd) + "\n" + proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def test_the_wheel_installs_and_evaluates_from_a_folder_outside_the_repository(tmp_path):
    source = working_tree(tmp_path / "src")
    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path / "dist"),
         str(source)], cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("vla_harness-*.whl")
    shipped = {n for n in zipfile.ZipFile(wheel).namelist() if n.endswith(".yaml")}
    configs = {"harness/configs/" + str(p.relative_to(ROOT / "configs")) for p in (ROOT / "configs").rglob("*.yaml")}
    assert configs and configs <= shipped

    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = Path(run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp_path).stdout.strip())
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # torch, hydra, ... of this env
    run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index", "-q", str(wheel)],
        cwd=tmp_path)

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    where = run([str(python), "-c", "import harness.configs as c; print(c.__file__)"], elsewhere).stdout.strip()
    assert Path(where).is_relative_to(env_dir), where
    entry_points = configparser.ConfigParser()
    with zipfile.ZipFile(wheel) as z:
        (listed,) = [n for n in z.namelist() if n.endswith(".dist-info/entry_points.txt")]
        entry_points.read_string(z.read(listed).decode())
    commands = list(entry_points["console_scripts"])
    assert "vla-harness-eval" in commands
    assert all(name.startswith("vla-harness-") for name in commands)  # `vla-eval` is another project's command
    assert all((env_dir / "bin" / name).is_file() for name in commands)
    proc = run([str(env_dir / "bin" / "vla-harness-eval"), "agent=random", "num_chains=2", "ep_len=5", "workers=1",
                "videos=0", "video_failures=0", "progress=false", "output_dir=out"], elsewhere)
    assert "| random | builtin D | 2 |" in proc.stdout
    assert json.loads((elsewhere / "out" / "results.json").read_text())["num_chains"] == 2
    job = run([str(env_dir / "bin" / "vla-harness-train"), "--cfg", "job", "model=tiny_idefics3", "data.path=x"], elsewhere)
    assert "tiny: tiny_idefics3" in job.stdout and "chunk_size: 10" in job.stdout
