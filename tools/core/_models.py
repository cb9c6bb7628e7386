"""Loading a logged scikit-learn model: through skops, trusting only types this project computes.

MLflow's own loader passes skops the trusted-types list written in the model's ``MLmodel``
file, so a crafted model can declare any function trusted (``posix.system`` included), and
pickle or cloudpickle models run code on load. Here the list is computed from the file itself
and must hold only numpy, scipy and scikit-learn types; other formats are refused.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mlops_supervisor.policies import InvalidInputError

__all__ = ["TRUSTED_ROOTS", "foreign_types", "load_sklearn_model"]

TRUSTED_ROOTS = ("numpy", "scipy", "sklearn")
"""The packages whose types a model may hold: what our allow-listed estimators are made of."""


def foreign_types(types: list[str]) -> list[str]:
    """The type names in ``types`` that are not numpy, scipy or scikit-learn types."""
    return [t for t in types if t.split(".", 1)[0] not in TRUSTED_ROOTS]


def load_sklearn_model(model_uri: str) -> Any:
    """The model logged at ``model_uri`` (read from the current MLflow store); ``InvalidInputError`` if unsafe."""
    import skops.io
    from mlflow.artifacts import download_artifacts
    from mlflow.models import Model

    local = Path(download_artifacts(artifact_uri=model_uri)).resolve()
    flavor = Model.load(str(local / "MLmodel")).flavors.get("sklearn")
    if flavor is None:
        raise InvalidInputError("unsafe_model", f"{model_uri} is not a scikit-learn model; only those are loaded")
    serialization = flavor.get("serialization_format", "pickle")
    if serialization != "skops":
        raise InvalidInputError(
            "unsafe_model",
            f"{model_uri} is serialized as {serialization}, which runs code when loaded; only skops models are loaded",
        )
    path = (local / str(flavor.get("pickled_model", ""))).resolve()
    if not path.is_file() or not path.is_relative_to(local):
        raise InvalidInputError("unsafe_model", f"{model_uri} names a model file outside its own artifacts")
    untrusted = list(skops.io.get_untrusted_types(file=path))
    foreign = foreign_types(untrusted)
    if foreign:
        raise InvalidInputError(
            "unsafe_model",
            f"{model_uri} holds types outside {', '.join(TRUSTED_ROOTS)}: {', '.join(foreign)}; it is not loaded",
        )
    return skops.io.load(path, trusted=untrusted)
