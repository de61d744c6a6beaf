import re

import pytest

from onedge.errors import ConfigError
from pipeline.config import RunConfig, load_config
from tests.conftest import ROOT

CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_every_shipped_config_validates(path):
    cfg = load_config(path)
    assert isinstance(cfg, RunConfig)
    assert cfg.training_config().model.name == cfg.model.name


def test_overrides_parse_yaml_values():
    cfg = load_config(ROOT / "configs/digits-one.yaml", ["train.epochs=3", "train.nesterov=true"])
    assert cfg.train.epochs == 3 and cfg.train.nesterov is True


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.epoch=3", "unknown config key 'train.epoch'"),
        ("trian.epochs=3", "unknown config key 'trian.epochs'"),
        ("train.epochs=-1", "train.epochs"),
        ("train.epochs", "not key=value"),
        ("train.lr.x=1", "is not a section"),
    ],
)
def test_bad_overrides_give_one_clear_error(override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("'", "'")):
        load_config(ROOT / "configs/digits-one.yaml", [override])


def test_unknown_key_in_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epochs: 2\n  learning_rate: 0.1\n")
    with pytest.raises(ConfigError, match="unknown config key 'train.learning_rate'"):
        load_config(bad)


def test_missing_and_non_mapping_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    listy = tmp_path / "list.yaml"
    listy.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="mapping"):
        load_config(listy)


def test_yaml_tags_are_not_executed(tmp_path):
    evil = tmp_path / "evil.yaml"
    evil.write_text("name: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(evil)


def test_later_stages_have_defaults_so_training_only_configs_stay_valid(tmp_path):
    only_training = tmp_path / "train-only.yaml"
    only_training.write_text("train:\n  epochs: 2\n")
    cfg = load_config(only_training)
    assert cfg.validate.targets == ["local-cpu"]
    assert cfg.validate.required_targets() == ["local-cpu"]
    assert cfg.registry.tracking_uri is None and cfg.model_name() == "onedge-student"
    assert "export" not in cfg.training_config().model_dump()


def test_digits_config_sets_quick_pipeline_settings():
    cfg = load_config(ROOT / "configs/digits-one.yaml")
    assert cfg.export.formats == ["onnx", "openvino"]
    assert cfg.export.precisions == ["fp32", "fp16", "int8"]
    assert cfg.validate.settings.timed_seconds <= 1.0
    assert cfg.validate.gates.max_p99_ms == {"local-cpu": 25.0}
    assert cfg.model_name() == "digits-one-student"


@pytest.mark.parametrize(
    "override, message",
    [
        ("validate.required=[ssh://pi@board:22]", "required target 'ssh://pi@board:22'"),
        ("validate.targets=[jtag://board]", "is not of the form ssh://"),
        ("validate.targets=[gpu-box]", "unknown target 'gpu-box'"),
        ("validate.boards={local-cpu: {key: x}}", "'local-cpu' does not take the options ['key']"),
        ("registry.champion_alias=candidate", "must differ"),
        ("validate.gates.max_top1_dorp=1", "unknown config key 'validate.gates.max_top1_dorp'"),
        ("export.formats=[]", "export.formats"),
        ("registry.model_name=x' OR name != 'y", "registry.model_name: model name"),
        ("registry.model_name=-student", "must start with a letter or digit"),
    ],
)
def test_bad_pipeline_settings_give_one_clear_error(override, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(ROOT / "configs/digits-one.yaml", [override])


def test_ssh_board_options_are_checked_when_the_config_loads():
    spec = "ssh://pi@board:2222/jetson"
    good = load_config(
        ROOT / "configs/digits-one.yaml",
        [
            f"validate.targets=[local-cpu, '{spec}']",
            f"validate.boards={{'{spec}': {{python: /usr/bin/python3}}}}",
        ],
    )
    assert good.validate.required_targets() == ["local-cpu", spec]
    with pytest.raises(ConfigError, match="fingerprint"):
        load_config(
            ROOT / "configs/digits-one.yaml",
            [
                f"validate.targets=['{spec}']",
                f"validate.boards={{'{spec}': {{fingerprint: MD5:aa}}}}",
            ],
        )


def test_model_names_that_reach_registry_filters_are_checked(tmp_path, capsys):
    from pipeline.cli import main

    ok = load_config(ROOT / "configs/digits-one.yaml", ["registry.model_name=digits_v2.1-a"])
    assert ok.model_name() == "digits_v2.1-a"
    with pytest.raises(ConfigError, match="it's-student.*set registry.model_name"):
        load_config(None, ["name=it's"])
    assert load_config(None, ["name=it's", "registry.enabled=false"]).name == "it's"
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for command in (["promote", "--version", "1"], ["rollback"]):
        assert main([*command, "--tracking-uri", uri, "--model", "a' OR name LIKE '%"]) == 2
        err = capsys.readouterr().err
        assert "model name" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "mlflow.db").exists()
