"""What a deploy of a spec's model would apply to a cluster, rendered without touching one (``deploy --dry-run``).

``preview`` renders, with the spec's ``serving`` section, the objects the Kubernetes backend
applies for a first deploy of one version (all traffic to it): the same ``_manifests.render``
the backend's ``deploy`` uses. The version's model URI and gate evidence digest come from the
registry when the version is registered; otherwise ``models:/MODEL/VERSION`` stands in and a note
says so. A spec served locally has nothing to render (``UsageError``).
"""

from __future__ import annotations

import gzip
import json
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from mlops_supervisor.policies import RunError, UsageError
from mlops_supervisor.tools._spec import PipelineSpec

__all__ = ["CRD_SCHEMA", "Preview", "preview", "validate_objects"]

CRD_SCHEMA = Path(__file__).resolve().parent / "kserve" / "inferenceservice-v1beta1-openapiv3.json.gz"
"""KServe v0.20.0's InferenceService ``openAPIV3Schema`` (Apache-2.0; see kserve/PROVENANCE.md)."""


@dataclass(frozen=True)
class Preview:
    """The objects a deploy would apply, in apply order, and what the reader should know about them."""

    model: str
    version: int
    form: str
    objects: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)


def preview(spec: PipelineSpec, *, store_uri: str | None, tracking_uri: str, version: int | None = None) -> Preview:
    """The objects deploying ``version`` (default: the newest registered, else 1) of ``spec``'s model would apply.

    ``store_uri`` is the registry to read the version from (None: no registry yet, nothing read);
    ``tracking_uri`` is the one the cluster's model servers are given.
    """
    from mlops_supervisor.tools.serving._manifests import VersionServing, render

    model, target = spec.model.name, spec.serving.target or "local"
    kube = spec.serving.kubernetes
    if target == "local":
        raise UsageError(
            f"nothing to render: {model}'s spec serves it locally (serving.target "
            f"{spec.serving.target or 'not set'}); set serving.target to kubernetes or kserve, with a "
            "serving.kubernetes section, to deploy to a cluster"
        )
    if kube is None:
        raise UsageError(
            f"serving.target is {target} but the spec has no serving.kubernetes section (namespace, image or "
            "storage_uri); add it"
        )
    notes: list[str] = []
    number, uri, digest = _registered(model, version, store_uri) if store_uri else (version or 1, None, None)
    if uri is None:
        uri = f"models:/{model}/{number}"
        notes.append(
            f"{model} version {number} is not registered in {store_uri or 'this workspace (no store yet)'}: "
            f"its model URI is shown as {uri}"
        )
    objects = render(
        model, {number: VersionServing(100, uri, digest)}, kube, form=target, tracking_uri=tracking_uri, canary=None
    )
    notes += validate_objects(objects)
    return Preview(model=model, version=number, form=target, objects=objects, notes=notes)


def _strict(schema: Any) -> Any:
    """A CRD schema as the API server applies it: unknown fields are errors (it prunes or, strict, refuses them)."""
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items()}
    if out.get("type") == "object" and "properties" in out and not out.get("x-kubernetes-preserve-unknown-fields"):
        out.setdefault("additionalProperties", False)
    if out.pop("nullable", False) and "type" in out:
        out["type"] = [out["type"], "null"]
    return out


@cache
def _isvc_validator() -> Any:
    import jsonschema  # type: ignore[import-untyped]

    with gzip.open(CRD_SCHEMA) as packed:
        return jsonschema.Draft7Validator(_strict(json.loads(packed.read())))


def validate_objects(objects: list[dict[str, Any]]) -> list[str]:
    """Check each object: an InferenceService against KServe's CRD schema, the rest against Kubernetes' strict schemas.

    ``RunError`` naming the object, the field and the problem for the first invalid one; the notes of
    what could not be checked (Kubernetes' schemas need the ``kubernetes-validate`` package).
    """
    from mlops_supervisor.tools.serving._manifests import KUBERNETES_VERSION

    notes: list[str] = []
    try:
        from kubernetes_validate.utils import ValidationError, validate  # type: ignore[import-untyped]
    except ImportError:
        validate = None
        notes.append(
            "Deployments, Services and ConfigMaps not checked against Kubernetes' schemas: "
            "`pip install kubernetes-validate` to check them"
        )
    for obj in objects:
        name = f"{obj.get('kind')} {obj.get('metadata', {}).get('namespace')}/{obj.get('metadata', {}).get('name')}"
        if obj.get("kind") == "InferenceService":
            errors = sorted(_isvc_validator().iter_errors(obj), key=str)
            if errors:
                where = ".".join(str(p) for p in errors[0].absolute_path) or "(top)"
                raise RunError(f"{name} does not validate against KServe's CRD schema at {where}: {errors[0].message}")
        elif validate is not None:
            try:
                validate(obj, KUBERNETES_VERSION, strict=True)
            except ValidationError as exc:
                where = ".".join(str(p) for p in exc.path) or "(top)"
                raise RunError(
                    f"{name} does not validate against Kubernetes {KUBERNETES_VERSION}'s strict schema at {where}: "
                    f"{exc.message}"
                ) from exc
    return notes


def _registered(model: str, version: int | None, store_uri: str) -> tuple[int, str | None, str | None]:
    """(version, its model URI, its evidence digest) from the registry; URI and digest None where unknown."""
    from mlops_supervisor.policies.gates import evidence_digest
    from mlops_supervisor.tools.core import using_store
    from mlops_supervisor.tools.registry import version_evidence

    with using_store(store_uri) as client:
        # a checked model name (a slug) cannot break out of the quotes
        versions = {int(v.version): v for v in client.search_model_versions(f"name = '{model}'")}
        number = version if version is not None else (max(versions) if versions else 1)
        if number not in versions:
            return number, None, None
        # the digest of the evidence as it stands now; the deploy's gate reads it again
        return number, str(versions[number].source), evidence_digest(version_evidence(client, model, number))
