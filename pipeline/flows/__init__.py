"""Prefect flows: train -> export -> validate (fan-out over targets) -> promote, and the chain.

One module per flow (:mod:`~pipeline.flows.train_flow`, :mod:`~pipeline.flows.export_flow`,
:mod:`~pipeline.flows.validate_flow`, :mod:`~pipeline.flows.promote_flow`), the chain that runs
them in turn and ends with the report (:mod:`~pipeline.flows.chain`), and what their tasks share:
the one-slot limits of boards and registered models and the retry rule
(:mod:`~pipeline.flows.limits`).

Every task is a thin call of a plain function (training, export, targets, pipeline.run_folder,
pipeline.model_registry, pipeline.report). Each flow takes the run config (a RunConfig, or the
path of a YAML file plus overrides, which is what a deployment passes) and the run folder; the
stages exchange files through that folder (see :mod:`pipeline.run_folder`), so each flow also
runs alone.

Training and export keep their results in ``DIR/.cache`` as JSON records (:mod:`pipeline.cache`),
keyed by their inputs, onedge's version and the source of training/, export/ and targets/:
rerunning a run whose validation failed goes straight to validation. Only transient faults (a
board unreachable or timing out, the registry busy) are retried.

Prefect loads a deployment's entrypoint with this folder first on ``sys.path``: a module here
must not share its name with a top-level package (``training``, ``export``, ``targets``, ...).
"""
