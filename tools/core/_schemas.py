"""Argument schemas several domains share, and the one way a tool turns its result into text."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, Field

__all__ = ["ModelArgs", "ModelVersionArgs", "SpecArgs", "to_json"]


class ModelArgs(BaseModel):
    """A tool that acts on one registered model."""

    model: str = Field(description="registered model name")


class ModelVersionArgs(ModelArgs):
    """A tool that acts on one version of a registered model."""

    version: int = Field(ge=1, description="model version number")


class SpecArgs(BaseModel):
    """A tool that reads the pipeline spec."""

    spec: str = Field(description="path of the pipeline spec (YAML)")


def to_json(value: Any) -> str:
    """A tool's result as JSON text (dates, paths and other values JSON lacks as strings)."""
    return json.dumps(value, default=str)
