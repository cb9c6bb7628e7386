"""What a deploy of a spec's model would apply to a cluster, rendered without touching one (``deploy --dry-run``).

``preview`` renders, with the spec's ``serving`` section, the objects the Kubernetes backend
applies for a first deploy of one version (all traffic to it): the same ``_manifests.render``
the backend's ``deploy`` uses. The version's model URI and gate evidence digest come from the
registry when the version is registered, and so does its ``serving`` section: the one of the spec it
was trained from (what its deploy uses), with a note when the spec given differs. For a version not
registered, ``models:/MODEL/VERSION`` stands in and a note says so. A spec served locally has
nothing to render (``UsageError``).
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
    ``tracking_uri`` is the one the cluster's model servers are given. A registered version is
    rendered with the ``serving`` section of the spec it was trained from, as its deploy would be;
    ``spec``'s own stands in for a version not registered (or trained without a logged spec).
    """
    from mlops_supervisor.tools.serving._manifests import VersionServing, render

    model = spec.model.name
    notes: list[str] = []
    found = _registered(model, version, store_uri) if store_uri else _Registered(version or 1)
    number, serving, whose = found.version, spec.serving, "its spec"
    if found.spec is not None:
        if found.spec.serving != spec.serving:
            notes.append(
                f"rendered with the serving section {model} version {number} was trained with, which its deploy "
                "uses; the spec given here has another"
            )
        serving, whose = found.spec.serving, f"the spec version {number} was trained from"
    target, kube = serving.target or "local", serving.kubernetes
    if target == "local":
        raise UsageError(
            f"nothing to render: {whose} serves {model} locally (serving.target {serving.target or 'not set'}); "
            "set serving.target to kubernetes or kserve, with a serving.kubernetes section, to deploy to a cluster"
        )
    if kube is None:
        raise UsageError(
            f"serving.target is {target} but {whose} has no serving.kubernetes section (namespace, image or "
            "storage_uri); add it"
        )
    uri = found.uri
    if uri is None:
        uri = f"models:/{model}/{number}"
        notes.append(
            f"{model} version {number} is not registered in {store_uri or 'this workspace (no store yet)'}: "
            f"its model URI is shown as {uri}"
        )
    objects = render(
        model,
        {number: VersionServing(100, uri, found.digest)},
        kube,
        form=target,
        tracking_uri=tracking_uri,
        canary=None,
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


@dataclass(frozen=True)
class _Registered:
    """A version as the registry holds it: its model URI, evidence digest and training spec, each None if unknown."""

    version: int
    uri: str | None = None
    digest: str | None = None
    spec: PipelineSpec | None = None


def _registered(model: str, version: int | None, store_uri: str) -> _Registered:
    """``version`` (default: the newest) of ``model`` in the registry at ``store_uri``."""
    from mlops_supervisor.policies.gates import evidence_digest
    from mlops_supervisor.tools.core import using_store
    from mlops_supervisor.tools.registry import trained_from, version_evidence

    with using_store(store_uri) as client:
        # a checked model name (a slug) cannot break out of the quotes
        versions = {int(v.version): v for v in client.search_model_versions(f"name = '{model}'")}
        number = version if version is not None else (max(versions) if versions else 1)
        if number not in versions:
            return _Registered(number)
        found = versions[number]
        return _Registered(
            number,
            str(found.source),
            # the digest of the evidence as it stands now; the deploy's gate reads it again
            evidence_digest(version_evidence(client, model, number)),
            trained_from(client, found),
        )
