"""The one strict pydantic base: unknown keys are an error, never silently dropped."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A pydantic model that refuses unknown fields (``extra="forbid"``)."""

    model_config = ConfigDict(extra="forbid")
