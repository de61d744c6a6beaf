"""The run configuration: one typed model for the CLI and the Prefect flows.

Loaded from YAML with ``yaml.safe_load``, overridden with ``key.path=value`` pairs, validated once
(pydantic, ``extra="forbid"``) and saved next to everything it produced.
"""

from __future__ import annotations

import re
import typing
import warnings
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from export.config import ExportConfig
from onedge.errors import ConfigError, OnedgeError
from onedge.strict import StrictModel
from targets.base import ValidationSettings, parse_target
from targets.gates import GatePolicy, TargetBudget
from training import methods as _methods  # noqa: F401  (fills the method-config registry)
from training.config import TrainingConfig

MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def check_model_name(name: str) -> str:
    """``name`` if it is a safe registered model name (letters, digits, ``_``, ``.``, ``-``)."""
    if not MODEL_NAME.fullmatch(name):
        raise ConfigError(
            f"model name {name!r} must start with a letter or digit and hold only letters, "
            "digits, '_', '.' and '-'"
        )
    return name


class ValidateConfig(StrictModel):
    """Where the artifacts are measured, how, and which gates they must pass.

    ``targets`` are target specs (``local-cpu``, ``ssh://user@host:port[/jetson]``); ``boards``
    gives each SSH target its options (``known_hosts``, ``key``, ``fingerprint``, ``python``,
    ``name``, ...). ``required`` lists the targets a champion must pass (None: every target).
    """

    targets: list[str] = Field(default_factory=lambda: ["local-cpu"], min_length=1)
    required: list[str] | None = None
    boards: dict[str, dict[str, Any]] = Field(default_factory=dict)
    settings: ValidationSettings = Field(default_factory=ValidationSettings)
    gates: GatePolicy = Field(default_factory=GatePolicy)
    budgets: dict[str, TargetBudget] = Field(
        default_factory=dict,
        description="per target: max_p99_ms, max_size_mb, min_top1 for the per-target choice",
    )
    retries: int = Field(2, ge=0, description="task retries after a transient fault (SSH)")
    retry_delay_s: float = Field(30.0, ge=0.0)
    board_timeout_s: float = Field(
        3600.0, gt=0.0, description="how long to wait for a busy board before failing"
    )
    torch_baseline: bool = Field(
        True, description="time the PyTorch FP32 student on this CPU for the speed-up column"
    )
    int8_repair_max_nodes: int = Field(
        8,
        ge=0,
        description="an ONNX INT8 artifact below the agreement gate on a target is repaired "
        "there (docs/INT8_REPAIR.md) with at most this many nodes kept in float; 0: never",
    )

    @field_validator("targets")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        return list(dict.fromkeys(v.strip() for v in value if v.strip()))

    @model_validator(mode="after")
    def _known_targets(self) -> ValidateConfig:
        for name in self.required or []:
            if name not in self.targets:
                raise ValueError(f"required target {name!r} is not in targets {self.targets}")
        for name in self.boards:
            if name not in self.targets:
                raise ValueError(f"boards has options for {name!r}, which is not in targets")
        for name in self.budgets:
            if name not in self.targets:
                raise ValueError(f"budgets has a budget for {name!r}, which is not in targets")
        for spec in self.targets:
            options = self.boards.get(spec, {})
            try:
                parse_target(spec, **options)
            except OnedgeError as exc:
                raise ValueError(str(exc)) from None
            except ValidationError as exc:
                err = exc.errors()[0]
                where = ".".join(str(p) for p in err["loc"])
                msg = err["msg"].removeprefix("Value error, ")
                raise ValueError(f"boards[{spec!r}].{where}: {msg}") from None
            except TypeError:
                raise ValueError(
                    f"target {spec!r} does not take the options {sorted(options)}"
                ) from None
        return self

    def required_targets(self) -> list[str]:
        return list(self.required) if self.required is not None else list(self.targets)


class RegistryConfig(StrictModel):
    """The MLflow registry: where it is, what gets registered and when aliases move.

    A version gets ``candidate_alias`` when the registered artifact passes the gates of every
    required target; it also gets ``champion_alias`` when, on top of that, it is better than the
    current champion on the same eval set with an exact McNemar p-value below ``max_p_value`` and a
    top-1 gain above ``min_top1_gain`` (a fraction), or when there is no champion.
    """

    enabled: bool = True
    tracking_uri: str | None = Field(
        None, description="None: sqlite file mlflow.db in the run folder"
    )
    experiment: str | None = Field(None, description="None: the config's name")
    model_name: str | None = Field(None, description="None: <config name>-student")
    artifact: str = Field(
        "auto", description="artifact to register; auto: the fastest that passes every gate"
    )
    candidate_alias: str = "candidate"
    champion_alias: str = "champion"
    min_top1_gain: float = Field(
        0.0, ge=0.0, le=1.0, description="top-1 (fraction) above the champion's it must beat by"
    )
    max_p_value: float = Field(
        0.05,
        gt=0.0,
        le=1.0,
        description="a challenger replaces the champion only when better with McNemar p below this",
    )
    same_eval_set: bool = Field(True, description="compare with the champion only on its eval set")
    per_target: bool = Field(
        False,
        description="with several targets: register each target's pick (validate.budgets) "
        "under candidate-<target> and champion-<target>",
    )
    log_artifacts: bool = Field(True, description="log every artifact folder to the MLflow run")
    approval: Literal["auto", "ask"] = Field(
        "auto",
        description="ask: a version that would become champion waits, paused in Prefect, for a "
        "person's approval (it is candidate meanwhile)",
    )
    approval_timeout_s: int = Field(
        3600, ge=1, description="with ask: how long to wait; without an answer it stays candidate"
    )
    retries: int = Field(2, ge=0, description="task retries after a transient registry fault")
    retry_delay_s: float = Field(10.0, ge=0.0)

    @field_validator("model_name")
    @classmethod
    def _safe_model_name(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                check_model_name(value)
            except ConfigError as exc:
                raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _distinct_aliases(self) -> RegistryConfig:
        if self.candidate_alias == self.champion_alias:
            raise ValueError("candidate_alias and champion_alias must differ")
        if self.per_target and self.approval == "ask":
            raise ValueError(
                "registry.approval: ask waits for one champion; per-target champions "
                "(registry.per_target) are promoted by hand with onedge promote --target instead"
            )
        return self


with warnings.catch_warnings():
    # The section is called "validate" in YAML and on the command line; on the model it shadows
    # pydantic's deprecated ``BaseModel.validate`` classmethod, which nothing here uses.
    warnings.filterwarnings("ignore", message='Field name "validate"', category=UserWarning)

    class RunConfig(TrainingConfig):
        """Training sections (data, model, method, train) plus the later stages of the pipeline."""

        export: ExportConfig = Field(default_factory=ExportConfig)
        validate: ValidateConfig = Field(default_factory=ValidateConfig)
        registry: RegistryConfig = Field(default_factory=RegistryConfig)

        def training_config(self) -> TrainingConfig:
            return TrainingConfig.model_validate(
                self.model_dump(mode="json", include=set(TrainingConfig.model_fields))
            )

        @model_validator(mode="after")
        def _safe_default_model_name(self) -> RunConfig:
            if self.registry.enabled and self.registry.model_name is None:
                try:
                    check_model_name(self.model_name())
                except ConfigError as exc:
                    raise ValueError(f"{exc} (from name); set registry.model_name") from None
            return self

        def model_name(self) -> str:
            return self.registry.model_name or f"{self.name}-student"


ConfigArg = RunConfig | Path  # what a flow takes: the config, or its YAML file (a deployment)


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


def section_schema(annotation: Any) -> type[BaseModel] | None:
    """The model of a config section: the annotation itself, or the one model in a union
    (``method.teacher`` is a checkpoint path or a teacher section)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    models = [
        a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)
    ]
    return models[0] if len(models) == 1 else None


def apply_override(
    data: dict[str, Any], path: list[str], value: Any, model: type[BaseModel]
) -> None:
    """Set ``data[path] = value`` after checking that every key exists in the config schema.

    A section whose schema depends on its data (the ``method`` section: each method owns its
    config) is checked against the variant its current ``name`` selects; setting its ``name`` to
    another method starts that section from the new method's defaults (later keys apply).
    """
    node, schema = data, model
    for depth, part in enumerate(path):
        if schema is not None and hasattr(schema, "variant"):
            try:
                schema = schema.variant(node)
            except OnedgeError as exc:
                raise ConfigError(f"{'.'.join(path[:depth])}: {exc}") from None
        fields = schema.model_fields if schema is not None else {}
        if schema is not None and part not in fields:
            where = ".".join(path[:depth]) or "the top level"
            raise ConfigError(
                f"unknown config key {'.'.join(path)!r}; keys at {where}: {', '.join(fields)}"
            )
        if depth == len(path) - 1:
            if part == "name" and hasattr(schema, "switch") and isinstance(value, str):
                try:
                    schema.switch(node, value)
                except OnedgeError as exc:
                    raise ConfigError(f"{'.'.join(path)}: {exc}") from None
            else:
                node[part] = value
            return
        schema = section_schema(fields[part].annotation) if schema is not None else None
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
    return f"{source}: {where}: {err['msg'].removeprefix('Value error, ')}{more}"


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
            raise ConfigError(
                f"{path} must hold a mapping of sections, not {type(loaded).__name__}"
            )
        data = loaded or {}
    return config_from_data(data, overrides, source)


def config_from_data(
    data: dict[str, Any], overrides: list[str] | None = None, source: str = "config"
) -> RunConfig:
    """Apply ``overrides`` to plain config data and validate it into a RunConfig."""
    for text in overrides or []:
        apply_override(data, *parse_override(text), RunConfig)
    try:
        return RunConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(validation_message(exc, source)) from None


def dump_config(config: BaseModel) -> str:
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
