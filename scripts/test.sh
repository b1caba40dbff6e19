#!/usr/bin/env bash
# The test suite. Default: the fast suite (under 15 minutes on 2 cores).
#   scripts/test.sh            fast suite
#   scripts/test.sh --slow     only the slow tests (full evaluations, long training runs)
#   scripts/test.sh --all      everything
#   scripts/test.sh -m EXPR    the fast (or --slow, --all) tests that EXPR selects too, e.g. -m calvin_env
# Any other arguments go to pytest.
source "$(dirname "$0")/_venv.sh"
marker="not slow"
extra=""  # a -m of the caller's, combined with the suite's (pytest keeps only the last -m)
args=()
while [ $# -gt 0 ]; do
    case "$1" in
        --slow) marker="slow" ;;
        --all) marker="slow or not slow" ;;
        -m) extra="${2:?-m needs an expression}"; shift ;;
        -m*) extra="${1#-m}" ;;
        *) args+=("$1") ;;
    esac
    shift
done
exec python -m pytest --durations=30 -m "($marker)${extra:+ and ($extra)}" "${args[@]+"${args[@]}"}"
