"""The target registry and parse_target, over every registered target."""

from __future__ import annotations

import getpass

import pytest
from pydantic import ValidationError

from onedge.errors import ConfigError, RegistryError
from targets import (
    TARGETS,
    JetsonOptions,
    JetsonTarget,
    SshOptions,
    SshTarget,
    Target,
    ValidationSettings,
    parse_target,
    runner,
)
from targets.base import BACKEND_FOR_FORMAT


def spec_for(name: str) -> str:
    return "local-cpu" if name == "local-cpu" else f"ssh://pi@board.local:2222/{name}"


def test_the_three_targets_are_registered() -> None:
    assert TARGETS.names() == ["jetson", "local-cpu", "ssh"]


@pytest.mark.parametrize("name", TARGETS.names())
def test_every_registered_target_parses_and_honours_the_protocol(name: str) -> None:
    target = parse_target(spec_for(name))
    assert isinstance(target, Target)
    assert target.kind == name
    assert target.formats and set(target.formats) <= set(BACKEND_FOR_FORMAT)


def test_ssh_urls() -> None:
    plain = parse_target("ssh://pi@board.local:2222")
    assert isinstance(plain, SshTarget) and not isinstance(plain, JetsonTarget)
    assert (plain.user, plain.host, plain.port) == ("pi", "board.local", 2222)
    assert plain.name == "ssh://pi@board.local:2222/ssh"
    default = parse_target("ssh://board.local")
    assert (default.user, default.port) == (getpass.getuser(), 22)
    named = parse_target("ssh://pi@orin:22/jetson", options=SshOptions(name="orin-nano"))
    assert isinstance(named, JetsonTarget) and isinstance(named.options, JetsonOptions)
    assert named.name == "orin-nano" and "tensorrt" in named.formats
    assert (
        parse_target(
            "ssh://pi@orin/jetson", tegrastats_interval_ms=500
        ).options.tegrastats_interval_ms
        == 500
    )


@pytest.mark.parametrize(
    ("spec", "error", "fragment"),
    [
        ("ssh://", ConfigError, "not of the form"),
        ("ftp://board", ConfigError, "not of the form"),
        ("ssh://pi@board:99999", ConfigError, "invalid port"),
        ("ssh://pi:secret@board", ConfigError, "options separately"),
        ("ssh", ConfigError, "needs an address"),
        ("ssh://pi@board/raspberry", RegistryError, "known: jetson, local-cpu, ssh"),
        ("gpu-server", RegistryError, "unknown target 'gpu-server'"),
    ],
)
def test_bad_target_specs(spec: str, error: type, fragment: str) -> None:
    with pytest.raises(error, match=fragment):
        parse_target(spec)


def test_fingerprints_must_be_sha256() -> None:
    with pytest.raises(ValidationError, match="SHA256"):
        SshOptions(fingerprint="MD5:12:34")
    with pytest.raises(ValidationError):
        SshOptions(password="hunter2")


def test_settings_map_onto_the_runner_flags() -> None:
    settings = ValidationSettings(
        warmup_seconds=0.5, warmup_calls=7, timed_seconds=2.5, timed_calls=300,
        throughput_calls=9, batch_size=8, threads=3, eval_limit=100,
    )  # fmt: skip
    args = runner.parse_args([*settings.runner_args(), "--describe"])
    assert (args.warmup_seconds, args.warmup_calls) == (0.5, 7)
    assert (args.timed_seconds, args.timed_calls, args.throughput_calls) == (2.5, 300, 9)
    assert (args.batch_size, args.threads, args.eval_limit) == (8, 3, 100)
