"""The report's Reproduce line: the printed ``memlab memorize`` command, parsed by the CLI's
own parser, builds exactly the recorded config; configs no command can express say so."""

import dataclasses

import pytest

from memlab.studies.base import command_line, python_only
from memlab.studies.memorize import RECIPE, STUDY, MemorizeConfig
from memlab.testing import config_from_command


def population(**changes):
    return dataclasses.replace(RECIPE, **changes)


CONFIGS = {
    "demo": MemorizeConfig(),
    "quick": MemorizeConfig.quick(),
    "full": MemorizeConfig.full(),
    "weight decay, model options, chunk size": MemorizeConfig(population=population(
        weight_decay=1e-4, chunk_size=8,
        model_kwargs={"hidden": [50, 50], "activation": "tanh", "dropout": 0.1})),
    "everything differs": MemorizeConfig(
        data="digits", n_train=500, label_noise=0.2, mem_min=0.3, infl_min=0.2,
        same_label=False, duplicate_threshold=0.9, target_se=0.05, removal=True,
        removal_seeds=4, cscores=True, cscore_models=16, cscore_ratios=(0.2, 0.5),
        reliability_splits=9,
        population=population(
            model="cnn1d", n_models=300, subset_fraction=0.6, epochs=12, batch_size=50,
            optimizer="sgd", lr=3e-4, momentum=0.8, nesterov=True, schedule="warmup_cosine",
            warmup_epochs=1.5, label_smoothing=0.05, augment=("shift:3",), input_noise=0.05,
            input_dropout=0.1, clip_grad_norm=2.0, decay_bias_and_norm=False, seed=3,
            record_epochs=True, save_weights=False, compact_records=True, chunk_size=16,
            compute_dtype="bfloat16", init="pretrained", reinit=("head",))),
    "step schedule, a user factory, a path with a space": MemorizeConfig(
        data="/tmp/my data/set.npz", population=population(
            model="tests.user_models:TinyCNN", model_kwargs={"width": 6}, schedule="step",
            lr_step_epochs=10, lr_gamma=0.5, optimizer="adamw", task="binary")),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_printed_command_recreates_the_config(name):
    config = CONFIGS[name]
    assert python_only(config) == []
    command = command_line(STUDY, config, out="runs/x")
    assert config_from_command(STUDY, command.replace(" --out runs/x", "")) == config, command
    assert all(len(line) <= 88 for line in command.splitlines()), command


def test_the_demo_command_is_bare_and_options_follow_the_differences():
    assert command_line(STUDY, MemorizeConfig()) == "memlab memorize"
    command = command_line(STUDY, CONFIGS["weight decay, model options, chunk size"])
    for part in ("--weight-decay 0.0001", "--chunk-size 8", "--model-option 'hidden=[50,50]'",
                 "--model-option 'activation=\"tanh\"'", "--model-option dropout=0.1"):
        assert part in command, command
    assert "--models" not in command and "--data" not in command


@pytest.mark.parametrize("config, reason", [
    (MemorizeConfig(data=None), "passed to run() as a Python object"),
    (MemorizeConfig(population=population(model="my_registered_net")), "registered in Python"),
])
def test_python_only_configs_print_no_command(config, reason):
    assert command_line(STUDY, config) is None
    assert any(reason in text for text in python_only(config))
