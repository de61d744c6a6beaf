"""``onedge run`` against a real ``mlflow server`` process (SQLite, proxied artifacts).

The server is started and stopped by the test on 127.0.0.1. The run reuses the end-to-end run's
folder, so training and export come from Prefect's cache; validation, registering and the report
run again, now over HTTP. Version, aliases and the registered hash are read back through the
HTTP client.
"""

from __future__ import annotations

import pytest

from export.manifest import read_manifest
from pipeline.cli import main
from pipeline.config import dump_config
from tests.pipeline.servers import free_port, mlflow_uri, started

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    argv = [
        "server", "--host", "127.0.0.1", "--port", str(port), "--workers", "1",
        "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
        "--artifacts-destination", str(root / "artifacts"),
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    with started(argv, {}, f"{url}/health", root / "server.log") as proc:
        yield url, root, proc


def test_onedge_run_registers_through_an_mlflow_server(
    pipeline_run, mlflow_server, tmp_path, capsys
):
    import mlflow
    from mlflow import MlflowClient

    from pipeline.model_registry.register import registered_sha256

    url, root, proc = mlflow_server
    config = pipeline_run.config.model_copy(deep=True)
    config.registry.tracking_uri = url
    config.registry.model_name = "served-digits"
    config_file = tmp_path / "digits-server.yaml"
    config_file.write_text(dump_config(config))
    saved = {p: p.read_bytes() for p in (pipeline_run.out / "config.yaml",)}
    try:
        status = main(["run", "--config", str(config_file), "--out", str(pipeline_run.out)])
    finally:  # the shared run folder keeps its own config for the other tests
        for path, data in saved.items():
            path.write_bytes(data)
    out = capsys.readouterr().out
    assert status == 0, out[-3000:]
    assert proc.poll() is None, "the server died during the run"
    client = MlflowClient(tracking_uri=url, registry_uri=url)
    versions = client.search_model_versions("name = 'served-digits'")
    assert [v.version for v in versions] == ["1"]
    version = versions[0]
    assert version.source.startswith(("mlflow-artifacts:", "models:/")) or "mlflow-artifacts" in (
        client.get_run(version.run_id).info.artifact_uri
    )
    aliases = {a: str(v) for a, v in client.get_registered_model("served-digits").aliases.items()}
    assert aliases == {"candidate": "1", "champion": "1"}
    artifact = version.tags["onedge.artifact"]
    manifest = read_manifest(pipeline_run.out / "export" / artifact)
    assert version.tags["onedge.sha256"] == manifest.sha256
    assert registered_sha256(client, url, "served-digits", "1", artifact) == manifest.sha256
    assert any((root / "artifacts").rglob("MLmodel")), "artifacts were not proxied to the server"
    with mlflow_uri(url):
        model = mlflow.pyfunc.load_model("models:/served-digits@champion")
    assert model.metadata.flavors["onedge"]["sha256"] == manifest.sha256
