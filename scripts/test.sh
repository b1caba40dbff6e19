#!/usr/bin/env bash
# The test suite. Default: the fast suite (under 15 minutes on 2 cores).
#   scripts/test.sh            fast suite
#   scripts/test.sh --slow     only the slow tests (full evaluations, long training runs)
#   scripts/test.sh --all      everything
#   scripts/test.sh -m EXPR    the fast (or --slow, --all) tests that EXPR selects too, e.g. -m calvin_env
# Any other arguments go to pytest.
# The tests run on a pytest-xdist worker per core (at most 8; VLA_HARNESS_TEST_WORKERS=N sets it, and 0 runs
# them in this process, e.g. to use a debugger). Each worker takes its share of the cores for torch
# (tests/conftest.py). --dist worksteal: an idle worker takes tests from a busy one's queue, so the suite
# does not wait at its end on one worker's long files.
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
workers="${VLA_HARNESS_TEST_WORKERS:-$(( $(nproc) < 8 ? $(nproc) : 8 ))}"
dist=(-n "$workers")
[ "$workers" = 0 ] || dist+=(--dist worksteal)
exec python -m pytest "${dist[@]}" --durations=30 -m "($marker)${extra:+ and ($extra)}" "${args[@]+"${args[@]}"}"
