"""The commands' options equal the configs' fields: name, help, metavar, panel and default (bavos/cli/options.py)."""

from __future__ import annotations

from typing import Any

import pytest
import typer.main

import bavos.cli  # noqa: F401 - registers the commands
from bavos.cli.app import app
from bavos.cli.options import config_values, default_text, field_default
from bavos.config import PANELS, ModelConfig, SegmentConfig, TrainConfig, fields_of, flag_of, train_config
from bavos.io.exports import EXPORTS

# Options that set no config field: how a command runs, not what it computes.
RUN_OPTIONS = {
    "segment": {"inputs", "output", "name", "quiet", "json_out", "skip_existing", "fail_fast", "shard", "help"},
    "train": {"clips", "output", "init_from", "resume", "until", "quiet", "help"},
    "recut": {"folders", "quiet", "help"},
}
# Fields with no option, each for a reason: the paper's fixed constants of training, the correlator's shape.
NO_OPTION = {
    ModelConfig: {"correlator_heads"},
    SegmentConfig: set(),
    TrainConfig: {
        "min_lr",
        "weight_decay",
        "frames",
        "points",
        "semantic_pos",
        "semantic_neg",
        "semantic_pos_threshold",
        "semantic_neg_threshold",
        "motion_pos",
        "motion_neg",
        "motion_margin",
        "with_cls",
        "attn_drop",
        "drop",
    },
}
COMMAND_CONFIGS = {"segment": (SegmentConfig, ModelConfig), "train": (TrainConfig,), "recut": (SegmentConfig,)}


def _params(command: str) -> dict[str, Any]:
    cmd = typer.main.get_command(app).commands[command]
    return {p.name: p for p in cmd.params}


def _owner(command: str, name: str) -> type | None:
    for config in (*COMMAND_CONFIGS[command], ModelConfig):
        if name in fields_of(config) and flag_of(config, name) is not None:
            return config
    return None


@pytest.mark.parametrize("command", ["segment", "train", "recut"])
def test_every_option_is_a_field_with_its_flag(command: str) -> None:
    for name, param in _params(command).items():
        config = _owner(command, name)
        if config is None:
            assert name in RUN_OPTIONS[command], f"bavos {command}: option {name} sets no config field"
            continue
        spec = flag_of(config, name)
        names = [n for part in (spec.names or (f"--{name.replace('_', '-')}",)) for n in part.split("/")]
        assert [*param.opts, *param.secondary_opts] == names, name
        help, metavar = spec.help, spec.metavar
        if "{choices}" in help:  # the exports: their registry declares the choices
            help = help.format(choices=", ".join(e.says for e in EXPORTS.values()))
            metavar = (metavar or "").format(choices="|".join(EXPORTS))
        assert param.help == help, name
        assert param.metavar == metavar, name
        assert param.rich_help_panel == spec.panel in PANELS, name


@pytest.mark.parametrize("config", [ModelConfig, SegmentConfig, TrainConfig])
def test_every_field_has_an_option_or_a_reason(config: type) -> None:
    commands = [c for c, configs in COMMAND_CONFIGS.items() if config in configs or config is ModelConfig]
    options = set().union(*(_params(c) for c in commands))
    for name in fields_of(config):
        if name in NO_OPTION[config]:
            assert flag_of(config, name) is None, name
        else:
            assert flag_of(config, name) is not None and name in options, f"{config.__name__}.{name} has no option"


def test_segment_defaults_are_the_configs() -> None:
    """The command's defaults, converted as the command converts them, are the dataclasses' defaults."""
    from bavos.cli.segment import CONVERT

    defaults = {name: param.default for name, param in _params("segment").items()}
    assert SegmentConfig(**config_values(SegmentConfig, defaults, CONVERT)) == SegmentConfig()
    assert ModelConfig(**config_values(ModelConfig, defaults)) == ModelConfig()
    recut = _params("recut")
    assert (recut["level"].default, recut["max_objects"].default) == (SegmentConfig.level, SegmentConfig.max_objects)


def test_train_defaults_are_the_configs_and_said_in_the_help() -> None:
    """Train's options default to "not given" (the preset decides), and the help says the field's default."""
    from bavos.cli.train import CONVERT

    params = _params("train")
    given = {name: p.default for name, p in params.items() if name != "preset"}
    assert train_config(None, **config_values(TrainConfig, given, CONVERT)) == TrainConfig()
    for name, param in params.items():
        spec = flag_of(TrainConfig, name) if name in fields_of(TrainConfig) else None
        if spec is not None:
            assert param.default is None, name
            assert param.show_default == (spec.shown or default_text(spec, field_default(TrainConfig, name))), name
