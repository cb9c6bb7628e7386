#!/usr/bin/env bash
# What `make test` (and so CI) runs: the type check, the test suite and the built-in agent eval suite (its JUnit
# and JSON reports kept in reports/), reported in that order; it fails if any of them fails.
#
# The type check and the eval suite run beside the test suite, not after it: the suite keeps the two cores only
# about four fifths busy (servers starting, Prometheus' first scrape, subprocesses), and the other two fill that
# time. Their output is shown whole once the suite is done.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p reports
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

(bash -o pipefail -c '.venv/bin/mypy -p mlops_supervisor | sed -E -f .venv/mypy-path.sed' >"$out/typecheck" 2>&1
 echo $? >"$out/typecheck.rc") &
(.venv/bin/mlops-supervisor eval --workers 2 --junit reports/eval-junit.xml --json reports/eval.json >"$out/eval" 2>&1
 echo $? >"$out/eval.rc") &

# How the two pytest workers share the tests (whole files, or single tests of the files split, longest first):
# tests/_schedule.py. The slowest tests are listed at the end, so a slower run says where its time went.
.venv/bin/pytest -q -n 2 --dist loadscope --no-loadscope-reorder --durations=15
tests=$?
wait

echo "--- type check (mypy strict over the package)"
cat "$out/typecheck"
echo "--- built-in agent eval suite"
cat "$out/eval"
typecheck=$(cat "$out/typecheck.rc" 2>/dev/null || echo 1)
evals=$(cat "$out/eval.rc" 2>/dev/null || echo 1)
echo "--- type check exit $typecheck, tests exit $tests, evals exit $evals"
[ "$typecheck" -eq 0 ] && [ "$tests" -eq 0 ] && [ "$evals" -eq 0 ]
