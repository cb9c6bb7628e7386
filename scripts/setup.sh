#!/usr/bin/env bash
# One-time (and idempotent) setup: a .venv with the exact versions of requirements.lock.
# Re-runs are no-ops until the lock or pyproject.toml changes.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null || { echo "error: $PYTHON not found; install Python 3.11 or set PYTHON=..." >&2; exit 2; }
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
want=$(cat requirements-bootstrap.txt requirements.lock pyproject.toml | sha256sum | cut -c1-64)
if [ "$(cat .venv/.setup-stamp 2>/dev/null)" != "$want" ]; then
  echo "setting up .venv from requirements.lock (hash-checked)..." >&2
  # pip's config on some machines names extra local indexes; its 'is ignored' noise is dropped.
  { .venv/bin/python -m pip install -q --require-hashes -r requirements-bootstrap.txt 2>&1; } | { grep -v 'is ignored' || true; }
  # Compile bytecode once here: otherwise every fresh process (CLI, model servers) pays for it.
  .venv/bin/uv pip install -q --python .venv/bin/python --require-hashes --compile-bytecode -r requirements.lock
  .venv/bin/uv pip install -q --python .venv/bin/python --no-deps -e .
  echo "$want" > .venv/.setup-stamp
fi
# Our own modules' bytecode, written here because Python may not write it itself: where PYTHONDONTWRITEBYTECODE
# is set (as on these machines), every process would compile the package again, 0.3 to 0.5 s each, and the test
# suite and a demo start hundreds of them. Incremental: only changed files are compiled.
.venv/bin/python -m compileall -q -j 0 supervisor tools policies agents evals prompts >/dev/null
# The type checker's view of the package (scripts/mypy_tree.py says why); synced on every run.
.venv/bin/python scripts/mypy_tree.py
