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


def test_tools_surface_is_pinned() -> None:
    """`mlops_supervisor.tools` exports exactly this list, whatever its subpackages hold."""
    import mlops_supervisor.tools as tools

    assert sorted(tools.__all__) == [
        "GateResult",
        "GovernedTool",
        "LoadedSpec",
        "PipelineSpec",
        "ProgressFactory",
        "ToolContext",
        "ToolRegistry",
        "build_tool_registry",
        "load_spec",
        "no_progress",
        "spec_json_schema",
    ]
    for name in tools.__all__:
        assert getattr(tools, name) is not None


def test_every_package_folder_is_listed_for_the_wheel() -> None:
    """Each folder with an `__init__.py` is named in pyproject's packages and package-dir, so a wheel ships it."""
    import tomllib

    root = Path(__file__).resolve().parents[1]
    setup = tomllib.loads((root / "pyproject.toml").read_text("utf-8"))["tool"]["setuptools"]
    folders = {
        "mlops_supervisor": "supervisor",
        **{f"mlops_supervisor.{n}": n for n in ("agents", "tools", "policies", "prompts", "evals")},
    }
    found = {}
    for package, folder in folders.items():
        for init in sorted((root / folder).rglob("__init__.py")):
            parts = init.parent.relative_to(root / folder).parts
            found[".".join((package, *parts))] = "/".join((folder, *parts))
    missing = sorted(set(found) - set(setup["packages"]))
    assert not missing, f"not in [tool.setuptools] packages: {missing}"
    assert {p: setup["package-dir"].get(p) for p in found} == found
    for package in setup["packages"]:  # data-only packages (scenarios) have no __init__.py but must exist
        assert (root / setup["package-dir"][package]).is_dir(), package
    # every domain the design names is a package of its own
    for domain in ("core", "data", "training", "evaluation", "registry", "serving", "monitoring", "security"):
        assert f"mlops_supervisor.tools.{domain}" in found
