"""Each method owns its config: a tagged union on ``method.name``."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from onedge.errors import ConfigError
from pipeline.config import load_config
from tests.conftest import ROOT
from training.config import MethodConfig, TrainingConfig
from training.methods import METHODS

DIGITS = ROOT / "configs" / "digits-one.yaml"
# the method section every checkpoint held before each method owned its config
LEGACY = {
    "name": "one",
    "temperature": None,
    "rampup": True,
    "rampup_epochs": 80,
    "alpha": 0.9,
    "teacher": None,
}


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_has_its_own_config_class(name):
    cls = METHODS.get(name).config
    assert cls is not MethodConfig and issubclass(cls, MethodConfig)
    cfg = TrainingConfig.model_validate({"method": {"name": name}})
    assert type(cfg.method) is cls
    # the dump round-trips with the method's own keys, not only the base's name
    again = TrainingConfig.model_validate(cfg.model_dump(mode="json"))
    assert again.method == cfg.method
    assert set(cfg.model_dump()["method"]) == set(cls.model_fields)


def test_a_key_of_another_method_is_refused():
    with pytest.raises(ConfigError, match="unknown config key 'method.alpha'"):
        load_config(DIGITS, ["method.alpha=0.5"])
    with pytest.raises(ValidationError, match="method.rampup"):
        TrainingConfig.model_validate({"method": {"name": "dml", "rampup": True}})
    with pytest.raises(ValueError, match="unknown method 'nope'; known: compact, dml"):
        TrainingConfig.model_validate({"method": {"name": "nope"}})
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        load_config(DIGITS, ["method.name=nope"])


def test_switching_the_method_starts_from_its_defaults():
    cfg = load_config(DIGITS, ["method.rampup_epochs=3", "method.name=kd", "method.alpha=0.5"])
    assert cfg.method.model_dump() == {
        "name": "kd",
        "temperature": 4.0,  # kd's default, not the 3.0 the file tuned for ONE
        "alpha": 0.5,
        "teacher": None,
    }
    same = load_config(DIGITS, ["method.rampup_epochs=3", "method.name=one"])
    assert same.method.rampup_epochs == 3 and same.method.temperature == 3.0


def test_configs_of_older_runs_still_load():
    one = TrainingConfig.model_validate({"method": LEGACY}).method
    assert one.model_dump() == {
        "name": "one",
        "temperature": 3.0,
        "rampup": True,
        "rampup_epochs": 80,
    }
    kd = TrainingConfig.model_validate(
        {"method": {**LEGACY, "name": "kd", "temperature": 2.0, "teacher": "t.pt"}}
    ).method
    assert (kd.temperature, kd.alpha, str(kd.teacher)) == (2.0, 0.9, "t.pt")
    # only the complete old section is migrated: a partial one is checked strictly
    with pytest.raises(ValueError, match="method.alpha"):
        TrainingConfig.model_validate({"method": {"name": "one", "alpha": 0.9}})
