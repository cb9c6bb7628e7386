"""The install exposes one namespace, and the public API is pinned."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import mlops_supervisor


def test_generic_names_are_not_installed_top_level(tmp_path: Path) -> None:
    """Outside the repo, `import tools` fails and `import mlops_supervisor.tools` works."""
    code = (
        "import importlib.util as u, mlops_supervisor.tools, mlops_supervisor.agents, mlops_supervisor.policies\n"
        "print([n for n in ('tools', 'agents', 'policies', 'supervisor', 'prompts', 'evals') if u.find_spec(n)])"
    )
    done = subprocess.run([sys.executable, "-I", "-c", code], cwd=tmp_path, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
    failed = subprocess.run(
        [sys.executable, "-I", "-c", "import tools"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert "ModuleNotFoundError: No module named 'tools'" in failed.stderr


def test_public_api_is_pinned() -> None:
    """The top-level surface is exactly this list; a change is a reviewed diff."""
    assert sorted(mlops_supervisor.__all__) == [
        "MlopsSupervisorError",
        "Report",
        "RunError",
        "RunResult",
        "Settings",
        "Supervisor",
        "UsageError",
        "WorkspaceStatus",
    ]
    for name in mlops_supervisor.__all__:
        assert getattr(mlops_supervisor, name) is not None


def test_prompts_ship_for_every_specialist() -> None:
    """Every specialist has a non-empty prompt that states what it never does."""
    from mlops_supervisor.agents import SPECIALISTS, load_prompt

    assert "Route" in load_prompt("supervisor")
    for spec in SPECIALISTS.values():
        assert "never" in spec.prompt.lower(), spec.name
        assert set(spec.tools), spec.name
