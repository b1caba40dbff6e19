# Sourced by the scripts in this folder: makes sure the project's virtual environment exists, is
# up to date with pyproject.toml, and is active. The first run installs everything (a few minutes).
# torch is pinned to the CPU build 2.13.0 first, because an unpinned "torch" from PyPI pulls a
# multi-GB CUDA build; users with GPUs can install their own torch into the venv beforehand.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VLA_HARNESS_VENV:-$ROOT/.venv}"
PYTHON_BIN="${PYTHON:-python3}"
if [ ! -x "$VENV/bin/python" ]; then
    echo "[vla-harness] creating virtual environment in $VENV" >&2
    "$PYTHON_BIN" -m venv "$VENV"
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
STAMP="$VENV/.vla-harness-installed"
WANT="$(sha256sum "$ROOT/pyproject.toml" | cut -d' ' -f1)"
if [ ! -f "$STAMP" ] || [ "$(cat "$STAMP")" != "$WANT" ]; then
    LOG="$VENV/install.log"  # pip's full output; a line per stage on the terminal
    echo "[vla-harness] installing dependencies (first run only, a few minutes); pip's log: $LOG" >&2
    : > "$LOG"
    _vla_stage() {  # _vla_stage "what" command...: one line, or the log's tail and a failure
        local started=$SECONDS
        printf '[vla-harness]   %s ... ' "$1" >&2
        if "${@:2}" >> "$LOG" 2>&1; then
            echo "done ($((SECONDS - started)) s)" >&2
        else
            echo "FAILED; the end of $LOG:" >&2
            tail -n 25 "$LOG" >&2
            return 1
        fi
    }
    # `|| return`: this file is sourced, and errexit does not hold inside `source ... && ...`
    _vla_stage "pip" python -m pip install --upgrade pip || return 1
    if ! python -c "import torch" 2>/dev/null; then
        _vla_stage "torch ${VLA_HARNESS_TORCH:-2.13.0} (CPU build)" python -m pip install "torch==${VLA_HARNESS_TORCH:-2.13.0}" || return 1
    fi
    _vla_stage "vla-harness and its dependencies" python -m pip install -e "$ROOT[dev]" || return 1
    echo "$WANT" > "$STAMP"
fi
# The real calvin_env for env=calvin, when CALVIN_ENV_SOURCE says where from (a git URL, a clone or a
# bundle; CALVIN_ENV_COMMIT picks the commit): installed on first use and whenever either changes.
if [ -n "${CALVIN_ENV_SOURCE:-}" ]; then
    bash "$ROOT/scripts/install_calvin_env.sh" --if-changed "$CALVIN_ENV_SOURCE"
fi
cd "$ROOT"
