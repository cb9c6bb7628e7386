#!/usr/bin/env python3
"""The type checker's view of the package. The editable install maps the folders into
mlops_supervisor with an import hook, which mypy cannot follow; so .venv/mypy-path holds
mlops_supervisor laid out as a wheel installs it (pyproject's packages and package-dir), one
symlink per module. Synced on every run (a few ms): a new or removed module is seen at once.
.venv/mypy-path.sed maps mypy's paths in that tree back to the source folders.
"""

import contextlib
import os
import tomllib
from pathlib import Path

setup = tomllib.loads(Path("pyproject.toml").read_text("utf-8"))["tool"]["setuptools"]
mapped, tree = setup.get("package-dir", {}), Path(".venv/mypy-path")
links, rules = {}, []
for package in setup["packages"]:
    parts = package.split(".")
    # as setuptools finds it: the nearest package named in package-dir, then the remaining names
    i = next((i for i in range(len(parts), 0, -1) if ".".join(parts[:i]) in mapped), 0)
    folder = Path(mapped[".".join(parts[:i])] if i else mapped.get("", "."), *parts[i:])
    for file in sorted(folder.iterdir()) if folder.is_dir() else ():
        if file.suffix in (".py", ".pyi") or file.name == "py.typed":
            links[tree.joinpath(*parts, file.name)] = os.path.relpath(file, tree.joinpath(*parts))
    rules.append(f"s#^{tree.joinpath(*parts).as_posix().replace('.', '[.]')}/([^/:]+:)#{folder.as_posix()}/\\1#")
for path in sorted(tree.rglob("*"), reverse=True):  # stale links first, then the folders they emptied
    if path.is_symlink() and path not in links:
        path.unlink(missing_ok=True)
    elif path.is_dir() and not path.is_symlink():
        with contextlib.suppress(OSError):
            path.rmdir()  # only if empty
for link, target in links.items():
    if not (link.is_symlink() and os.readlink(link) == target):
        link.parent.mkdir(parents=True, exist_ok=True)
        tmp = link.with_name(f".{link.name}.{os.getpid()}")
        tmp.symlink_to(target)
        os.replace(tmp, link)  # atomic, so a concurrent mypy never sees a gap
sed = Path(f".venv/mypy-path.sed.{os.getpid()}")
sed.write_text("\n".join(rules) + "\n", "utf-8")
os.replace(sed, ".venv/mypy-path.sed")
