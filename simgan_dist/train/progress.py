"""Where a training run is, for its console line: phase, share of it done, rate and ETA."""

from __future__ import annotations

from simgan_dist.train.loop import LoopState, Phase

BAR_WIDTH = 10


def format_duration(seconds: float) -> str:
    """42s, 3m05s, 1h02m: short enough for a line that also holds the metrics."""
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def progress_text(phases: tuple[Phase, ...], state: LoopState, images_per_s: float | None) -> str:
    """E.g. 'kimg 45.0/115.2 adversarial 3/3 [####------] 41% ETA phase 1m42s, run 1m42s'.

    The ETA assumes the rest runs at the current rate: a later phase that draws images faster
    or slower (D pretraining takes no R step) makes the run figure an estimate, the phase
    figure is close. Without a rate yet (the first line) there is no ETA."""
    total_nimg = sum(p.num_images for p in phases)
    index = state.phase_index  # the loop stays in its last phase when the schedule ends
    phase = phases[index]
    phase_nimg = min(state.phase_nimg, phase.num_images)
    share = phase_nimg / phase.num_images if phase.num_images else 1.0
    filled = round(share * BAR_WIDTH)
    text = (
        f"kimg {state.cur_nimg / 1000:.1f}/{total_nimg / 1000:.1f} "
        f"{phase.name} {index + 1}/{len(phases)} "
        f"[{'#' * filled}{'-' * (BAR_WIDTH - filled)}] {share:4.0%}"
    )
    if images_per_s:
        phase_left = (phase.num_images - phase_nimg) / images_per_s
        run_left = max(0, total_nimg - state.cur_nimg) / images_per_s
        text += f" ETA phase {format_duration(phase_left)}, run {format_duration(run_left)}"
    return text
