# Sourced by the scripts in this folder: makes sure the project's virtual environment exists, is
# up to date with pyproject.toml and setup.py, and is active. The first run installs everything (a few
# minutes). torch 2.13.0 (VLA_HARNESS_TORCH) is installed first: on a machine without an NVIDIA GPU from
# PyTorch's CPU index when it can be reached (PyPI's torch is the multi-GB CUDA build), or from the index
# VLA_HARNESS_TORCH_INDEX names; users with GPUs can install their own torch into the venv beforehand.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${VLA_HARNESS_VENV:-$ROOT/.venv}"
PYTHON_BIN="${PYTHON:-python3}"
CPU_TORCH_INDEX="https://download.pytorch.org/whl/cpu"
if [ ! -x "$VENV/bin/python" ]; then
    echo "[vla-harness] creating virtual environment in $VENV" >&2
    "$PYTHON_BIN" -c 'import sys; sys.exit(sys.version_info < (3, 10))' \
        || { echo "[vla-harness] $PYTHON_BIN is older than Python 3.10; set PYTHON to a newer one" >&2; return 1; }
    "$PYTHON_BIN" -m venv "$VENV" || { rm -rf "$VENV"; echo "[vla-harness] could not create $VENV (Debian/Ubuntu:" \
        "apt-get install python3-venv)" >&2; return 1; }
fi
if [ ! -f "$VENV/bin/activate" ] || ! "$VENV/bin/python" -m pip --version >/dev/null 2>&1; then
    echo "[vla-harness] $VENV is incomplete (no activate script or no pip: a creation that failed half-way);" \
         "remove it and run again" >&2
    return 1
fi
# shellcheck disable=SC1091
source "$VENV/bin/activate"
STAMP="$VENV/.vla-harness-installed"
WANT="$(cat "$ROOT/pyproject.toml" "$ROOT/setup.py" <(echo "torch ${VLA_HARNESS_TORCH:-} ${VLA_HARNESS_TORCH_INDEX:-}") \
        | sha256sum | cut -d' ' -f1)"
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
    _vla_torch_index() {  # pip's index option for torch: the one asked for, or the CPU one without a GPU
        if [ -n "${VLA_HARNESS_TORCH_INDEX:-}" ]; then
            echo "--index-url $VLA_HARNESS_TORCH_INDEX"
        elif ! command -v nvidia-smi >/dev/null && [ "$(uname -s)" = Linux ] \
            && python -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)" "$CPU_TORCH_INDEX/" 2>/dev/null; then
            echo "--index-url $CPU_TORCH_INDEX"
        fi
    }
    _vla_torch_source() {
        local index; index="$(_vla_torch_index)"
        if [ -n "$index" ]; then echo "from ${index#--index-url }"; else echo "from the configured indexes"; fi
    }
    # `|| return`: this file is sourced, and errexit does not hold inside `source ... && ...`
    _vla_stage "pip" python -m pip install --upgrade pip || return 1
    if ! python -c "import torch" 2>/dev/null; then
        _vla_stage "torch ${VLA_HARNESS_TORCH:-2.13.0} ($(_vla_torch_source))" \
            python -m pip install "torch==${VLA_HARNESS_TORCH:-2.13.0}" $(_vla_torch_index) || return 1
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
