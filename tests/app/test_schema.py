"""The run's options are written once: `RunConfig` and `RunRequest` share them (`schema.RunOptions`)."""

import dataclasses

from pipeline.app.schema import GROUPS, RunConfig, RunOptions, RunRequest


def _names(cls):
    return [f.name for f in dataclasses.fields(cls)]


def test_run_request_carries_every_option_of_the_run_config_with_its_default():
    options = [name for name in _names(RunConfig) if name not in GROUPS]
    assert options == _names(RunOptions)
    assert set(options) <= set(_names(RunRequest))
    config, request = dataclasses.fields(RunConfig), {f.name: f for f in dataclasses.fields(RunRequest)}
    for option in config:
        if option.name in options:
            assert (request[option.name].type, request[option.name].default) == (option.type, option.default)


def test_the_config_groups_come_first_as_in_config_yaml():
    assert _names(RunConfig)[: len(GROUPS)] == list(GROUPS) == ["model", "frontend", "backend", "debug_handles"]
