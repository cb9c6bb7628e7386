"""The workspace: the one directory that holds what the embedded default writes."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mlops_supervisor.policies import WorkspaceError

__all__ = ["Workspace"]


@dataclass(frozen=True)
class Workspace:
    """Paths inside one workspace directory."""

    root: Path

    @classmethod
    def open(cls, root: Path, *, create: bool = True) -> Workspace:
        """The workspace at ``root``, created if needed; ``WorkspaceError`` when unusable."""
        root = Path(root).expanduser().absolute()
        if root.exists() and not root.is_dir():
            raise WorkspaceError(f"workspace {root} exists and is not a directory; pass --workspace DIR")
        if create:
            try:
                root.mkdir(mode=0o700, parents=True, exist_ok=True)
                (root / "logs").mkdir(mode=0o700, exist_ok=True)
                if root.stat().st_uid == os.getuid():
                    # the workspace holds data sets, models and threads: no one else may enter it
                    root.chmod(0o700)
            except OSError as exc:
                raise WorkspaceError(
                    f"workspace {root} cannot be created ({exc.strerror}); pass a writable --workspace DIR"
                ) from None
            if not os.access(root, os.W_OK | os.X_OK):
                raise WorkspaceError(f"workspace {root} is not writable; pass a writable --workspace DIR")
        return cls(root)

    @property
    def audit_path(self) -> Path:
        """The hash-chained audit log."""
        return self.root / "audit.jsonl"

    @property
    def checkpoints_path(self) -> Path:
        """The SQLite checkpoint store of every thread."""
        return self.root / "checkpoints.sqlite"

    @property
    def logs_dir(self) -> Path:
        """Where the JSON-lines logs go."""
        return self.root / "logs"

    @property
    def policy_path(self) -> Path:
        """A workspace-local policy file, used when no other is named."""
        return self.root / "policy.yaml"
