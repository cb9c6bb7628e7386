"""Where the data stage's output lives in the workspace, content-addressed::

    datasets/<digest>/data.parquet           the versioned data set (PII already dropped or hashed)
    datasets/<digest>/dataset.json           its facts: source, columns, validation and PII reports
    datasets/<digest>/splits/<key>/          train, validation and test parquet + reference_profile.json
    pipelines/<spec name>.json               which data set and split the spec's last data stage made

Each directory appears whole or not at all (written aside, then published), and the
pointer under ``pipelines/`` is what training reads, so training never sees a half-made
data set and always trains on what the data stage checked.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from mlops_supervisor.policies import InvalidInputError
from mlops_supervisor.policies.policy import PiiRules
from mlops_supervisor.tools._spec import LoadedSpec
from mlops_supervisor.tools.core import ToolContext

__all__ = ["data_key", "datasets_dir", "pointer_path", "read_pointer"]


def datasets_dir(ctx: ToolContext) -> Path:
    """Where versioned data sets live in the workspace."""
    return Path(ctx.workspace) / "datasets"


def pointer_path(ctx: ToolContext, loaded: LoadedSpec) -> Path:
    """The pointer to the data set and split the spec's last data stage made."""
    return Path(ctx.workspace) / "pipelines" / f"{loaded.spec.name}.json"


def data_key(loaded: LoadedSpec, rules: PiiRules) -> str:
    """What the data stage's output depends on, besides the file: the data section, seed and PII rules."""
    material = {
        "data": loaded.spec.data.model_dump(mode="json"),
        "seed": loaded.spec.seed,
        "pii": rules.model_dump(mode="json"),
    }
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def read_pointer(ctx: ToolContext, loaded: LoadedSpec, need: str) -> dict[str, Any]:
    """The spec's pointer, refused unless it was made from the spec's current data section and holds ``need``."""
    path = pointer_path(ctx, loaded)
    hint = f"run the data stage first: mlops-supervisor run {loaded.path} --stop-after data"
    if not path.exists():
        raise InvalidInputError("data_not_prepared", f"no data set has been versioned for {loaded.spec.name}; {hint}")
    pointer: dict[str, Any] = json.loads(path.read_text("utf-8"))
    if pointer.get("data_key") != data_key(loaded, ctx.policy.pii):
        raise InvalidInputError(
            "data_not_prepared",
            f"the data section of {loaded.path} or the PII policy changed since the data was versioned; {hint}",
        )
    if need not in pointer:
        raise InvalidInputError("data_not_prepared", f"the data of {loaded.spec.name} has no {need} yet; {hint}")
    return pointer
