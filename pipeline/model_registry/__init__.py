"""The MLflow side of the pipeline: the store, registering versions, aliases and their lock,
per-target versions, promotion rules, approval, the model flavors and the pyfunc loader."""
