"""engine.deepspeed: merged over the generated DeepSpeed config; the keys our fields own refused."""

from __future__ import annotations

import pytest

from simgan_dist.config import ConfigError, load_config
from simgan_dist.train.engine import deepspeed_config


def _engine(passthrough: str):
    return load_config(preset="debug", overrides=[f"engine.deepspeed={passthrough}"]).engine


def test_nested_keys_merge_and_each_engine_gets_its_own_monitor_files() -> None:
    engine = _engine(
        "{zero_optimization: {offload_optimizer: {device: cpu}}, wall_clock_breakdown: true,"
        " csv_monitor: {enabled: true, output_path: /tmp/m, job_name: run7},"
        " flops_profiler: {enabled: true, output_file: /tmp/flops.txt}}"
    )
    refiner = deepspeed_config(8, engine, "refiner")
    disc = deepspeed_config(16, engine, "discriminator")
    assert refiner["zero_optimization"] == {"stage": 0, "offload_optimizer": {"device": "cpu"}}
    assert (
        refiner["wall_clock_breakdown"] is True and refiner["train_micro_batch_size_per_gpu"] == 8
    )
    assert refiner["csv_monitor"]["job_name"] == "run7-refiner"
    assert disc["csv_monitor"]["job_name"] == "run7-discriminator"
    assert disc["flops_profiler"]["output_file"] == "/tmp/flops-discriminator.txt"
    assert "csv_monitor" not in deepspeed_config(8, load_config(preset="debug").engine)


@pytest.mark.parametrize(
    ("passthrough", "field", "owner"),
    [
        ("{train_batch_size: 64}", "train_batch_size", "schedule.batch_size"),
        ("{train_micro_batch_size_per_gpu: 4}", "train_micro_batch_size_per_gpu", "schedule"),
        ("{gradient_accumulation_steps: 2}", "gradient_accumulation_steps", "engine.grad_accum"),
        ("{zero_optimization: {stage: 2}}", "zero_optimization.stage", "engine.zero_stage"),
        ("{bf16: {enabled: true}}", "bf16", "engine.precision"),
        ("{optimizer: {type: Adam}}", "optimizer", "optim"),
    ],
)
def test_a_key_our_fields_own_is_refused_naming_the_field(passthrough, field, owner) -> None:
    with pytest.raises(
        ConfigError, match=rf"debug.yaml.*engine\.deepspeed\.{field}: is set by {owner}"
    ):
        _engine(passthrough)


def test_a_monitor_section_that_is_not_a_mapping_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"engine\.deepspeed\.csv_monitor: must be a mapping"):
        _engine("{csv_monitor: true}")
