"""Where a pipeline run's time goes: each step of the chain, Prefect's own start-up and its orchestration.

``onedge run`` notes when it called the flow (:func:`mark_called`); the flow's first statement
then knows how long Prefect took to start (the temporary server, the flow run) before any of
onedge's work began. Steps (train, export, validate, register, report, attach-report) are timed around the
subflow or task calls, so a step's time
includes Prefect's handling of that call; what is left of the flow's wall time is Prefect's
orchestration between steps. The registry steps (register, attach-report) are MLflow's share.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from pydantic import Field

from onedge.strict import StrictModel

MLFLOW_STEPS = ("register", "attach-report")
_called_at: list[float] = []  # perf_counter when onedge run called the flow (this process)


def mark_called() -> None:
    """Note that the flow is being called now (by ``onedge run``, in this process)."""
    _called_at[:] = [time.perf_counter()]


def clear_mark() -> None:
    """Forget the mark (after the call, whether the flow started or not)."""
    _called_at.clear()


class StepTimes(StrictModel):
    """Seconds per step of one pipeline run (a step that did not run is absent)."""

    steps: dict[str, float] = Field(default_factory=dict)
    prefect_startup_s: float | None = Field(
        None, description="from the call of the flow to its first statement (None: unknown)"
    )
    flow_s: float = Field(0.0, description="from the flow's first statement to the last timed")
    mlflow_background_s: float | None = Field(
        None,
        description="a new MLflow store created by a child process beside training (not in "
        "the steps: it overlaps them on another core)",
    )

    @property
    def orchestration_s(self) -> float:
        """The flow's time outside every step: Prefect between the steps."""
        return max(0.0, self.flow_s - sum(self.steps.values()))

    @property
    def prefect_s(self) -> float:
        return (self.prefect_startup_s or 0.0) + self.orchestration_s

    @property
    def mlflow_s(self) -> float:
        return sum(self.steps.get(name, 0.0) for name in MLFLOW_STEPS)

    @property
    def total_s(self) -> float:
        return (self.prefect_startup_s or 0.0) + self.flow_s

    def summary(self) -> dict[str, float | None]:
        total = self.total_s or 1.0
        return {
            **{f"{name}_s": seconds for name, seconds in self.steps.items()},
            "prefect_startup_s": self.prefect_startup_s,
            "prefect_orchestration_s": self.orchestration_s,
            "total_s": self.total_s,
            "prefect_share": self.prefect_s / total,
            "mlflow_share": self.mlflow_s / total,
            "mlflow_background_s": self.mlflow_background_s,
        }

    def lines(self) -> list[str]:
        """One line per figure, for the report."""
        share = self.summary()
        out = [f"{name}: {seconds:.1f} s" for name, seconds in self.steps.items()]
        startup = self.prefect_startup_s
        out += [
            "Prefect start-up (temporary server, flow run): "
            + (f"{startup:.1f} s" if startup is not None else "not measured (started by a worker)"),
            f"Prefect between the steps: {self.orchestration_s:.1f} s",
            *(
                [f"MLflow store created beside training: {self.mlflow_background_s:.1f} s"]
                if self.mlflow_background_s is not None
                else []
            ),
            f"total from the call of the flow: {self.total_s:.1f} s; Prefect "
            f"{100 * share['prefect_share']:.0f}%, MLflow {100 * share['mlflow_share']:.0f}%",
        ]
        return out


class Stopwatch:
    """Times the steps of one flow run; started at the flow's first statement."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        called = _called_at[:1]
        _called_at.clear()
        self.times = StepTimes(prefect_startup_s=self.start - called[0] if called else None)

    @contextmanager
    def step(self, name: str) -> Iterator[None]:
        begin = time.perf_counter()
        try:
            yield
        finally:
            end = time.perf_counter()
            self.times.steps[name] = self.times.steps.get(name, 0.0) + end - begin
            self.times.flow_s = end - self.start

    def snapshot(self) -> StepTimes:
        return self.times.model_copy(deep=True)
