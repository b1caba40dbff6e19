#!/usr/bin/env bash
# The test suite. Default: the fast suite (under 15 minutes on 2 cores).
#   scripts/test.sh            fast suite
#   scripts/test.sh --slow     only the slow tests (full evaluations, long training runs)
#   scripts/test.sh --all      everything
# Any other arguments go to pytest.
source "$(dirname "$0")/_venv.sh"
marker=(-m "not slow")
args=()
for a in "$@"; do
    case "$a" in
        --slow) marker=(-m slow) ;;
        --all) marker=(-m "slow or not slow") ;;
        *) args+=("$a") ;;
    esac
done
exec python -m pytest "${marker[@]}" "${args[@]+"${args[@]}"}"
