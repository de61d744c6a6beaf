"""The run configuration: one typed model for the CLI and the Prefect flows.

Loaded from YAML with ``yaml.safe_load``, overridden with ``key.path=value`` pairs, validated once
(pydantic, ``extra="forbid"``) and saved next to everything it produced.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from training.config import TrainingConfig
from training.errors import ConfigError


class RunConfig(TrainingConfig):
    """Training sections (data, model, method, train) plus the later stages of the pipeline."""

    def training_config(self) -> TrainingConfig:
        return TrainingConfig.model_validate(
            self.model_dump(mode="json", include=set(TrainingConfig.model_fields))
        )


def parse_override(text: str) -> tuple[list[str], Any]:
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not key=value (e.g. train.epochs=5)")
    key, raw = text.split("=", 1)
    path = [part for part in key.strip().split(".") if part]
    if not path:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return path, value


def apply_override(data: dict[str, Any], path: list[str], value: Any, model: type[BaseModel]) -> None:
    """Set ``data[path] = value`` after checking that every key exists in the config schema."""
    node, schema = data, model
    for depth, part in enumerate(path):
        fields = schema.model_fields if schema is not None else {}
        if schema is not None and part not in fields:
            where = ".".join(path[:depth]) or "the top level"
            raise ConfigError(
                f"unknown config key {'.'.join(path)!r}; keys at {where}: {', '.join(fields)}"
            )
        if depth == len(path) - 1:
            node[part] = value
            return
        annotation = fields[part].annotation if schema is not None else None
        schema = annotation if isinstance(annotation, type) and issubclass(annotation, BaseModel) else None
        if schema is None:
            raise ConfigError(f"config key {'.'.join(path[: depth + 1])!r} is not a section")
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"config key {'.'.join(path[: depth + 1])!r} is not a section")


def validation_message(exc: ValidationError, source: str) -> str:
    err = exc.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or "(top level)"
    if err["type"] == "extra_forbidden":
        return f"{source}: unknown config key {where!r}"
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"{source}: {where}: {err['msg']}{more}"


def load_config(path: Path | None, overrides: list[str] | None = None) -> RunConfig:
    """Read ``path`` (or the defaults), apply ``overrides`` and validate into a RunConfig."""
    data: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path} must hold a mapping of sections, not {type(loaded).__name__}")
        data = loaded or {}
    for text in overrides or []:
        apply_override(data, *parse_override(text), RunConfig)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_message(exc, source)) from None


def dump_config(config: BaseModel) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
