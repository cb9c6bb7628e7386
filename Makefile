# Every target sets up .venv from requirements.lock first (a no-op once done).
.PHONY: setup demo test lint typecheck bench lock clean

setup:
	@bash scripts/setup.sh

demo: setup
	.venv/bin/mlops-supervisor demo

test: setup
	.venv/bin/pytest -q -n 2 --dist loadfile

lint: setup
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .

typecheck: setup
	.venv/bin/mypy policies tools agents

bench: setup
	.venv/bin/python benchmarks/bench_tool_call_overhead.py --write
	.venv/bin/python benchmarks/bench_train_stage.py --write
	.venv/bin/python benchmarks/bench_drift.py --write
	.venv/bin/python benchmarks/bench_serving.py --write

# Re-resolve the lock after changing dependencies in pyproject.toml.
lock:
	uv pip compile pyproject.toml --extra dev --generate-hashes --python-version 3.11 -o requirements.lock

clean:
	rm -rf .venv .mlops
