#!/usr/bin/env bash
# What `make test` (and so CI) runs: the type check, the test suite, then the built-in agent eval suite (its JUnit
# and JSON reports kept in reports/); it fails if any of them fails.
#
# The type check runs beside the test suite, at a lower priority: it is single-threaded, and the suite leaves
# about a seventh of the two cores idle (servers starting, waits on analysis windows, the last worker's tail),
# which is time enough for it. Its output is shown once the suite is done. The eval suite runs after: its
# real servers and analysis windows want the cores the suite would take.
set -uo pipefail
cd "$(dirname "$0")/.."
mkdir -p reports
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT

(nice -n 10 bash -o pipefail -c '.venv/bin/mypy -p mlops_supervisor | sed -E -f .venv/mypy-path.sed' >"$out/typecheck" 2>&1
 echo $? >"$out/typecheck.rc") &

# How the two pytest workers share the tests (whole files, or single tests of the files split, longest first):
# tests/_schedule.py. The slowest tests are listed at the end, so a slower run says where its time went.
.venv/bin/pytest -q -n 2 --dist loadscope --no-loadscope-reorder --durations=15
tests=$?
wait
echo "--- type check (mypy --strict over the package)"
cat "$out/typecheck"
typecheck=$(cat "$out/typecheck.rc" 2>/dev/null || echo 1)

echo "--- the built-in agent eval suite"
.venv/bin/mlops-supervisor eval --workers 2 --junit reports/eval-junit.xml --json reports/eval.json
evals=$?
echo "--- type check exit $typecheck, tests exit $tests, evals exit $evals"
[ "$typecheck" -eq 0 ] && [ "$tests" -eq 0 ] && [ "$evals" -eq 0 ]
