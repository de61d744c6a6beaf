"""The approval step (``registry.approval: ask``): a person makes a challenger the champion.

When a registered version passes its gates and would take the champion alias, it gets only
``candidate``; the ``approve`` flow then pauses with :func:`prefect.pause_flow_run` and waits for
an :class:`Approval` (Resume in the Prefect UI, or ``resume_flow_run(id, run_input=...)``),
showing the evidence: the version, the artifact, top-1 against the champion, the decision's
reasons and every target's verdict. Approved: the version becomes champion. Rejected, or no
answer within ``registry.approval_timeout_s``: it stays candidate. :func:`settle_approval`
records the answer: the aliases, the version's decision tag and ``DIR/registry.json``.
"""

from __future__ import annotations

from prefect import flow, get_run_logger, pause_flow_run
from prefect.input import RunInput
from pydantic import Field

from onedge.files import atomic_write
from pipeline.config import RegistryConfig
from pipeline.model_registry.aliases import TAG
from pipeline.model_registry.manual import promote
from pipeline.model_registry.register import RegistryOutcome
from pipeline.model_registry.tracking import connect, guarded
from pipeline.run_folder import RunFolder

POLL_S = 2


class Approval(RunInput):
    """What the person answers."""

    approve: bool = Field(False, description="make this version the champion")
    note: str = Field("", description="why (recorded with the decision)")


def evidence_markdown(outcome: RegistryOutcome) -> str:
    e = outcome.evidence
    top1 = "n/a" if e.top1 is None else f"{100 * e.top1:.2f}%"
    lines = [
        f"## Make version {outcome.version} of `{outcome.model_name}` the champion?",
        "",
        f"- artifact **{outcome.artifact}** ({e.format} {e.precision}), sha256 `{outcome.sha256}`",
        f"- test top-1 **{top1}** (lowest over the required targets)",
        f"- aliases now: {', '.join(f'{a} -> {v}' for a, v in outcome.aliases.items()) or 'none'}",
        f"- MLflow `{outcome.tracking_uri}`, run `{outcome.run_id}`",
        "",
        "| target | verdict |",
        "|---|---|",
        *(f"| {spec} | {verdict} |" for spec, verdict in e.verdicts.items()),
        "",
        "Evidence:",
        *(f"- {reason}" for reason in outcome.decision.reasons),
    ]
    return "\n".join(lines)


@flow(name="approve")
def approval_flow(outcome: RegistryOutcome, timeout_s: int) -> Approval:
    """Pause until a person answers; raises FlowPauseTimeout after ``timeout_s``."""
    get_run_logger().info(
        f"waiting up to {timeout_s} s for approval of version {outcome.version} of "
        f"{outcome.model_name} (Resume in the Prefect UI)"
    )
    form = Approval.with_initial_data(description=evidence_markdown(outcome), approve=False)
    return pause_flow_run(wait_for_input=form, timeout=timeout_s, poll_interval=POLL_S)


def settle_approval(
    outcome: RegistryOutcome, approved: bool, why: str, rules: RegistryConfig, run: RunFolder
) -> RegistryOutcome:
    """After the approval step: make the version champion if ``approved``; record ``why``."""
    if not outcome.awaiting_approval:
        return outcome
    client = connect(outcome.tracking_uri)
    aliases = outcome.aliases
    if approved:
        aliases = promote(client, outcome.model_name, outcome.version, rules.champion_alias)
    reasons = [*outcome.decision.reasons, why]
    with guarded(f"tagging version {outcome.version} of {outcome.model_name}"):
        client.set_model_version_tag(
            outcome.model_name, outcome.version, TAG + "decision", "; ".join(reasons)
        )
    decision = outcome.decision.model_copy(update={"champion": approved, "reasons": reasons})
    settled = outcome.model_copy(
        update={"decision": decision, "aliases": aliases, "awaiting_approval": False}
    )
    atomic_write(run.registry, settled.model_dump_json(indent=2))
    return settled
