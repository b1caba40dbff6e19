#!/usr/bin/env bash
# The test suite. Default: the fast suite (under 15 minutes on 2 cores).
#   scripts/test.sh            fast suite
#   scripts/test.sh --slow     only the slow tests (full evaluations, long training runs)
#   scripts/test.sh --all      everything
#   scripts/test.sh -m EXPR    the fast (or --slow, --all) tests that EXPR selects too, e.g. -m calvin_env
# Any other arguments go to pytest.
# The tests run on a pytest-xdist worker per core this process may use (at most 8; VLA_HARNESS_TEST_WORKERS=N
# sets it, and 0 runs them in this process, as --pdb, --trace and -p no:xdist do). Each worker takes its share
# of the cores for torch (tests/conftest.py). --dist worksteal: an idle worker takes tests from a busy one's
# queue, so the suite does not wait at its end on one worker's long files.
source "$(dirname "$0")/_venv.sh"
marker="not slow"
extra=""  # a -m of the caller's, combined with the suite's (pytest keeps only the last -m)
args=()
in_process=""   # --pdb, --trace: the tests in this process (-n 0)
no_xdist=""     # -p no:xdist: no -n at all (the option is xdist's)
while [ $# -gt 0 ]; do
    case "$1" in
        --slow) marker="slow" ;;
        --all) marker="slow or not slow" ;;
        -m) extra="${2:?-m needs an expression}"; shift ;;
        -m*) extra="${1#-m}" ;;
        --pdb|--trace) in_process=1; args+=("$1") ;;
        -p) [ "${2:-}" != no:xdist ] || no_xdist=1; args+=("$1" "${2:?-p needs a plugin name}"); shift ;;
        -pno:xdist) no_xdist=1; args+=("$1") ;;
        *) args+=("$1") ;;
    esac
    shift
done
# the cores from the affinity mask (GNU nproc would answer OMP_NUM_THREADS where it is set)
cores="$(python -c 'import os; print(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1)')"
workers="${VLA_HARNESS_TEST_WORKERS:-$(( cores < 8 ? cores : 8 ))}"
[ -z "$in_process" ] || workers=0
dist=(-n "$workers")
[ "$workers" = 0 ] || dist+=(--dist worksteal)
[ -z "$no_xdist" ] || dist=()
exec python -m pytest ${dist[@]+"${dist[@]}"} --durations=30 -m "($marker)${extra:+ and ($extra)}" "${args[@]+"${args[@]}"}"
