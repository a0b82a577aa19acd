"""Progress on the console: the training line's phase, share and ETA, and the shard bars."""

from __future__ import annotations

from simgan_dist.config import load_config
from simgan_dist.io import progress
from simgan_dist.io.progress import PROGRESS_ENV, progress_bar, with_progress
from simgan_dist.train.loop import LoopState, phases_for
from simgan_dist.train.progress import format_duration, progress_text


def test_durations_are_short_and_exact() -> None:
    assert [format_duration(s) for s in (0, 42.4, 185, 3725, -3)] == [
        "0s", "42s", "3m05s", "1h02m", "0s",
    ]  # fmt: skip


def test_the_line_says_phase_share_and_eta_at_the_current_rate() -> None:
    schedule = load_config(preset="digits").schedule
    phases = phases_for(schedule)
    pretrain = schedule.refiner_pretrain_nimg + schedule.disc_pretrain_nimg
    half = schedule.adversarial_nimg // 2
    state = LoopState(cur_nimg=pretrain + half, phase_index=2, phase_nimg=half)
    text = progress_text(phases, state, images_per_s=half / 100)  # 100 s left at this rate
    total = pretrain + schedule.adversarial_nimg
    assert text.startswith(
        f"kimg {(pretrain + half) / 1000:.1f}/{total / 1000:.1f} adversarial 3/3"
    )
    assert "[#####-----]  50%" in text and text.endswith("ETA phase 1m40s, run 1m40s")
    first = progress_text(phases, LoopState(cur_nimg=0), images_per_s=None)
    assert "pretrain_refiner 1/3 [----------]   0%" in first and "ETA" not in first


def test_the_run_eta_counts_the_phases_still_to_come() -> None:
    schedule = load_config(preset="digits").schedule
    rate = 1000.0
    text = progress_text(phases_for(schedule), LoopState(cur_nimg=0), rate)
    total = schedule.refiner_pretrain_nimg + schedule.disc_pretrain_nimg + schedule.adversarial_nimg
    assert f"ETA phase {format_duration(schedule.refiner_pretrain_nimg / rate)}, " in text
    assert text.endswith(f"run {format_duration(total / rate)}")


def test_a_redirected_bar_writes_whole_lines_and_progress_0_silences_it(
    capsys, monkeypatch
) -> None:
    monkeypatch.delenv(PROGRESS_ENV, raising=False)
    assert list(with_progress(range(5), 5, "quick", unit="item")) == list(range(5))
    assert capsys.readouterr().err == ""  # done within LOG_DELAY_S: no line in a log
    monkeypatch.setattr(progress, "LOG_DELAY_S", 0)
    assert list(with_progress(range(5), 5, "work", unit="item")) == list(range(5))
    err = capsys.readouterr().err
    assert "\r" not in err and err.splitlines()[-1].startswith("work: 100%|##########| 5/5")
    monkeypatch.setenv(PROGRESS_ENV, "0")
    with progress_bar(3, "quiet") as bar:
        bar.update(3)
    assert capsys.readouterr().err == ""


def test_a_bar_switched_off_by_its_caller_prints_nothing(capsys) -> None:
    with progress_bar(2, "off", enabled=False) as bar:
        bar.update(2)
    assert capsys.readouterr().err == ""
