#!/usr/bin/env bash
# Installs the real CALVIN simulator, calvin_env (not on PyPI), into the project's virtual environment,
# for `env=calvin` (docs/EVALUATION.md, "The real calvin_env").
#
#   scripts/install_calvin_env.sh [--commit C] [--dest DIR] [--checkout-only] [--if-changed] [SOURCE]
#
#   SOURCE  a git URL (default https://github.com/mees/calvin_env.git), a local clone, or a git bundle
#           file (CI: ../shared/vendor/calvin_env.bundle from the repository root)
#   --commit C       the calvin_env commit (default 797142c, its newest; 1431a46 is the one CALVIN's
#                    benchmark repository pins)
#   --dest DIR       where the clone goes (default: .venv/src/calvin_env)
#   --checkout-only  clone and check out only, install nothing: a second version beside the installed
#                    one, used with PYTHONPATH=DIR (the tests compare 1431a46 with 797142c this way)
#   --if-changed     do nothing when this SOURCE and commit are what the venv already holds
#
# calvin_env reads its own git commit hash when an env is built, so it is installed as an editable
# clone, never from an archive. Only what its simulation imports is installed, not its requirements.txt:
# no tacto (only the tactile camera needs it; CALVIN's evaluation renders the static and gripper
# cameras), no hydra-colorlog (the adapter composes calvin_env's conf without its logging plugin), and
# none of its data-collection tools (numba, pandas, matplotlib).
# `CALVIN_ENV_SOURCE=SOURCE` (and optionally `CALVIN_ENV_COMMIT=C`) makes scripts/_venv.sh run this on
# first use, and again when either changes.
set -euo pipefail
DEFAULT_SOURCE="https://github.com/mees/calvin_env.git"
commit="${CALVIN_ENV_COMMIT:-797142c}"
source_arg=""
dest=""
checkout_only=0
if_changed=0
usage() { sed -n '2,/^set /{/^#/p}' "$0" | sed 's/^# \{0,1\}//' >&2; exit "$1"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --commit) commit="${2:?--commit needs a value}"; shift 2 ;;
        --dest) dest="${2:?--dest needs a value}"; shift 2 ;;
        --checkout-only) checkout_only=1; shift ;;
        --if-changed) if_changed=1; shift ;;
        -h|--help) usage 0 ;;
        -*) echo "install_calvin_env.sh: unknown option $1" >&2; usage 2 ;;
        *) [ -z "$source_arg" ] || { echo "install_calvin_env.sh: more than one SOURCE given" >&2; usage 2; }
           source_arg="$1"; shift ;;
    esac
done
src="${source_arg:-$DEFAULT_SOURCE}"
# A local clone or bundle: an absolute path, so the stamp and the clone's origin do not depend on the cwd.
if [ -e "$src" ]; then
    src="$(realpath "$src")"
elif [[ "$src" != *://* && "$src" != *@*:* ]]; then
    echo "install_calvin_env.sh: SOURCE '$src' is neither an existing clone or bundle file nor a git URL" >&2
    exit 2
fi

[ -z "$dest" ] || dest="$(realpath -m "$dest")"  # before _venv.sh changes the directory

if [ "$checkout_only" = 0 ]; then
    # The project's venv, without re-entering this script from _venv.sh.
    CALVIN_ENV_SOURCE="" source "$(dirname "${BASH_SOURCE[0]}")/_venv.sh"
    dest="${dest:-$VENV/src/calvin_env}"
    stamp="$VENV/.calvin-env-installed"
    if [ "$if_changed" = 1 ] && [ "$(cat "$stamp" 2>/dev/null)" = "$src $commit" ]; then
        exit 0
    fi
fi
[ -n "$dest" ] || { echo "install_calvin_env.sh: --checkout-only needs --dest DIR" >&2; exit 2; }

echo "[vla-harness] calvin_env $commit from $src -> $dest" >&2
if [ -e "$dest" ]; then
    # Replace only an earlier calvin_env clone, never some other folder given by mistake.
    if [ -d "$dest/.git" ] && [ -d "$dest/calvin_env" ]; then
        rm -rf "$dest"
    else
        echo "install_calvin_env.sh: $dest exists and is not a calvin_env clone; not touching it" >&2
        exit 1
    fi
fi
mkdir -p "$(dirname "$dest")"
git clone -q --no-checkout "$src" "$dest"
if ! git -C "$dest" -c advice.detachedHead=false checkout -q "$commit" 2>/dev/null; then
    rm -rf "$dest"
    echo "install_calvin_env.sh: commit '$commit' is not in $src" >&2
    exit 1
fi
[ "$checkout_only" = 1 ] && exit 0

# What calvin_env's simulation imports (pybullet within the project's own pin, pyproject.toml), plus
# rich where the env module imports it at module level (1431a46 does).
needs=("pybullet>=3.2.6,<3.3" "gym==0.26.2" "hydra-core>=1.3,<1.4" numpy-quaternion opencv-python-headless GitPython scipy)
grep -q "^from rich\|^import rich" "$dest/calvin_env/envs/play_table_env.py" && needs+=(rich)
python -m pip install -q "${needs[@]}" >&2
python -m pip install -q --no-deps --no-build-isolation -e "$dest" >&2
if ! out="$(python -c "import calvin_env.envs.play_table_env" 2>&1)"; then
    echo "$out" >&2
    echo "install_calvin_env.sh: calvin_env was cloned to $dest but does not import (see above)" >&2
    exit 1
fi
echo "$src $commit" > "$stamp"
echo "[vla-harness] calvin_env $(git -C "$dest" rev-parse --short HEAD) installed (env=calvin)" >&2
