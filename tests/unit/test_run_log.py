"""metrics.jsonl is strict JSON: non-finite values are written as null (issue 18, item 16)."""

from __future__ import annotations

import json

import pytest

from simgan_dist.train.run_log import RunLog


def _refuse_constant(name: str) -> None:
    raise ValueError(f"not JSON: {name}")


def test_non_finite_metrics_are_null_and_every_line_is_strict_json(tmp_path) -> None:
    log = RunLog(tmp_path)
    log.write(64, "adversarial", {"loss_r": float("nan"), "loss_d": float("inf"), "acc": 0.5})
    log.event("resumed", 64)
    log.close()
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    rows = [json.loads(line, parse_constant=_refuse_constant) for line in lines]
    assert rows[0]["loss_r"] is None and rows[0]["loss_d"] is None
    assert rows[0]["acc"] == pytest.approx(0.5) and rows[1]["event"] == "resumed"


def test_tensorboard_holds_grids_as_images_and_the_config_as_hparams(tmp_path) -> None:
    import numpy as np
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from simgan_dist.config import config_to_yaml, load_config
    from simgan_dist.train.run_log import flat_hparams

    cfg = load_config(preset="debug")
    log = RunLog(tmp_path)
    log.config(cfg.to_dict(), config_to_yaml(cfg))
    log.write(32, "pretrain_refiner", {"loss_r": 0.25})
    log.image("grid", np.full((10, 12), 200, np.uint8), 32)
    log.close()
    events = EventAccumulator(str(tmp_path / "tensorboard"), size_guidance={"images": 0})
    events.Reload()
    (image,) = events.Images("grid")
    assert (image.step, image.width, image.height) == (32, 12, 10)
    assert [s.value for s in events.Scalars("loss_r")] == [0.25]
    assert "_hparams_/session_start_info" in events.summary_metadata
    flat = flat_hparams(cfg.to_dict())
    assert flat["schedule.batch_size"] == 8 and flat["optim.adam_betas"] == "[0.5, 0.999]"
    assert all(isinstance(v, (bool, int, float, str)) for v in flat.values())
