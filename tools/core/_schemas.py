"""Argument schemas several domains share, and the one way a tool turns its result into text."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, Field, field_validator

__all__ = ["ModelArgs", "ModelVersionArgs", "SpecArgs", "checked_name", "to_json"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


def checked_name(kind: str, name: str) -> str:
    """``name`` when it is a safe name (1-64 letters, digits, '_', '.' or '-'; no path separator, not '..').

    Model, pipeline and candidate names become file and directory names in the workspace and
    MLflow: one rule for all of them, whether they come from a spec or a tool argument.
    """
    if not _NAME.match(name):
        raise ValueError(
            f"{kind} name {name!r} must be 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"
        )
    return name


class ModelArgs(BaseModel):
    """A tool that acts on one registered model."""

    model: str = Field(description="registered model name")

    @field_validator("model")
    @classmethod
    def _safe_name(cls, model: str) -> str:
        return checked_name("model", model)


class ModelVersionArgs(ModelArgs):
    """A tool that acts on one version of a registered model."""

    version: int = Field(ge=1, description="model version number")


class SpecArgs(BaseModel):
    """A tool that reads the pipeline spec."""

    spec: str = Field(description="path of the pipeline spec (YAML)")


def to_json(value: Any) -> str:
    """A tool's result as JSON text (dates, paths and other values JSON lacks as strings)."""
    return json.dumps(value, default=str)
