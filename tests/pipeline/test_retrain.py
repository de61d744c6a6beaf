"""A scheduled retrain with another training seed, judged against the champion.

In its own file, after test_flows: it runs the flow on the shared Prefect test server, which
publishes report and validation artifacts under the keys test_flows reads back.
"""

from __future__ import annotations

import pytest

from pipeline.model_registry.register import register_run
from pipeline.model_registry.tracking import connect

pytestmark = pytest.mark.slow


def test_a_retrain_with_another_seed_is_judged_against_the_champion(run, store):
    """onedge run with seed 1 after a seed-0 champion: same eval set, decided by significance."""
    from pipeline.flows.chain import edge_pipeline

    config, folder = run
    first = register_run(config, folder)
    assert first.decision.champion
    retrain = config.model_copy(deep=True)
    retrain.seed = 1
    result = edge_pipeline(retrain, folder.root.parent / "seed1")
    outcome = result.registry
    assert outcome.version == "2"
    assert outcome.evidence.eval_set_sha256 == first.evidence.eval_set_sha256
    c = outcome.decision.comparison
    assert c is not None, outcome.decision.reasons
    assert c.new_top1["estimate"] == pytest.approx(outcome.evidence.top1)
    assert c.champion_top1["estimate"] == pytest.approx(first.evidence.top1)
    significant = c.p_value < config.registry.max_p_value and c.new_only > c.champion_only
    assert outcome.decision.champion == significant
    champion = connect(store).get_registered_model(config.model_name()).aliases["champion"]
    assert str(champion) == ("2" if significant else "1")
    report = result.report_md.read_text()
    assert f"McNemar p = {c.p_value:.3g}" in report
