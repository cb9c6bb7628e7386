# Every target sets up .venv from requirements.lock first (a no-op once done).
.PHONY: setup system-deps demo test lint typecheck bench lock clean

setup:
	@bash scripts/setup.sh

# Debian programs some tests run (promtool, amtool); installed only when missing.
system-deps:
	@bash scripts/system-deps.sh

demo: setup
	.venv/bin/mlops-supervisor demo

# The type check (beside the test suite), the test suite, then the built-in agent eval suite (its JUnit and JSON
# reports kept in reports/): scripts/test.sh says why, and how the two pytest workers share the tests.
test: setup system-deps
	@bash scripts/test.sh

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

# mypy --strict over the whole package (supervisor, agents, tools, policies, evals), read from
# .venv/mypy-path (see scripts/setup.sh) so mlops_supervisor.* imports resolve to our real types;
# error paths are mapped back to the source folders.
typecheck: setup
	bash -o pipefail -c '.venv/bin/mypy -p mlops_supervisor | sed -E -f .venv/mypy-path.sed'

bench: setup
	.venv/bin/python benchmarks/bench_tool_call_overhead.py --write
	.venv/bin/python benchmarks/bench_train_stage.py --write
	.venv/bin/python benchmarks/bench_drift.py --write
	.venv/bin/python benchmarks/bench_serving.py --write

# Re-resolve the lock after changing dependencies in pyproject.toml.
lock:
	.venv/bin/uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 -o requirements.lock

clean:
	rm -rf .venv .mlops
