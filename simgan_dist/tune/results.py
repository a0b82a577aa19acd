"""What a search leaves: a table of all trials, a plot of the objective, and the best config."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from simgan_dist.config import Config, config_to_yaml
from simgan_dist.tune.space import Search, apply_params, fixed_params

SCORE_COLUMNS = ("objective", "realism_acc", "fidelity_l1", "downstream_acc")


@dataclass
class TrialRow:
    """One trial as the table shows it; curve is (cur_nimg, objective) at each scored report."""

    trial: str
    status: str  # completed, stopped early (the scheduler), error
    cur_nimg: int
    params: dict[str, Any]
    scores: dict[str, float]
    curve: list[tuple[int, float]] = field(default_factory=list)


def trial_rows(
    results: Any, search: Search, schedule_nimg: int, interrupted: bool = False
) -> list[TrialRow]:
    """Rows from Tune's ResultGrid, by trial id. A trial without error that stopped short
    of the schedule was stopped by the scheduler, unless the search was interrupted: then it
    may also be unfinished, which --resume settles."""
    rows = []
    for result in results:
        metrics = result.metrics or {}
        frame = result.metrics_dataframe
        curve: list[tuple[int, float]] = []
        scores: dict[str, float] = {}
        if frame is not None and "objective" in frame:
            scored = frame[frame["objective"].notna()]
            pairs = zip(scored["cur_nimg"], scored["objective"], strict=True)
            curve = [(int(n), float(v)) for n, v in pairs]
            if len(scored):
                last = scored.iloc[-1]
                scores = {
                    k: float(last[k]) for k in SCORE_COLUMNS if k in last and last[k] == last[k]
                }
        cur_nimg = int(metrics.get("cur_nimg", 0))
        if result.error is not None:
            status = "error"
        elif cur_nimg < schedule_nimg:
            status = "stopped early or unfinished" if interrupted else "stopped early"
        else:
            status = "completed"
        config = result.config or {}  # None for a trial that never started
        params = {name: config.get(name) for name in search.searched()}
        trial = str(metrics.get("trial_id") or Path(result.path).name)
        rows.append(TrialRow(trial, status, cur_nimg, params, scores, curve))
    return sorted(rows, key=lambda row: row.trial)  # a restored grid lists them in any order


def best_row(rows: list[TrialRow]) -> TrialRow | None:
    """The highest final objective among trials that ran the whole schedule (the survivors of
    early stopping); among all scored trials if none did."""
    scored = [r for r in rows if "objective" in r.scores]
    completed = [r for r in scored if r.status == "completed"] or scored
    return max(completed, key=lambda r: r.scores["objective"], default=None)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "" if value is None else str(value)


def table(rows: list[TrialRow], search: Search) -> tuple[list[str], list[list[str]]]:
    present = [c for c in SCORE_COLUMNS if any(c in r.scores for r in rows)]
    header = ["trial", "status", "kimg", *search.searched(), *present]
    body = [
        [r.trial, r.status, f"{r.cur_nimg / 1000:g}"]
        + [_fmt(r.params[name]) for name in search.searched()]
        + [_fmt(r.scores.get(c)) for c in present]
        for r in rows
    ]
    return header, body


def markdown_table(rows: list[TrialRow], search: Search, best: TrialRow | None) -> str:
    header, body = table(rows, search)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row, cells in zip(rows, body, strict=True):
        if best is not None and row.trial == best.trial:
            cells = [f"**{cells[0]}** (best)", *cells[1:]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_csv(rows: list[TrialRow], search: Search, path: Path) -> None:
    header, body = table(rows, search)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(body)


def plot(rows: list[TrialRow], search: Search, path: Path) -> None:
    """Objective against images for every trial, then final objective against each searched
    field (log axis for loguniform, one slot per value for choices and grids)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    searched = search.searched()
    cols = min(3, 1 + len(searched))
    nrows = math.ceil((1 + len(searched)) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4.2 * cols, 3.4 * nrows), squeeze=False)
    flat = list(axes.flat)
    curves = flat[0]
    for row in rows:
        if row.curve:
            nimg, values = zip(*row.curve, strict=True)
            style = "-" if row.status == "completed" else "--"
            curves.plot([n / 1000 for n in nimg], values, style, marker=".", label=row.trial)
    curves.set_xlabel("kimg")
    curves.set_ylabel("objective")
    curves.set_title("objective per trial (dashed: stopped early)", fontsize=9)
    if any(row.curve for row in rows):
        curves.legend(fontsize=6)
    for ax, name in zip(flat[1:], searched, strict=False):
        domain = search.space[name]
        scored = [r for r in rows if "objective" in r.scores]
        categorical = domain.kind in ("choice", "grid")
        labels = [str(v) for v in domain.values]
        xs = [labels.index(str(r.params[name])) if categorical else r.params[name] for r in scored]
        ys = [r.scores["objective"] for r in scored]
        colors = ["tab:blue" if r.status == "completed" else "tab:orange" for r in scored]
        ax.scatter(xs, ys, c=colors)
        if categorical:
            ax.set_xticks(range(len(labels)), labels, fontsize=8)
        elif domain.kind == "loguniform":
            # Ticks at the bounds and their geometric middle: a range within one decade would
            # get no labelled tick, and minor labels overlap.
            low, high = domain.values
            ticks = [low, (low * high) ** 0.5, high]
            ax.set_xscale("log")
            ax.minorticks_off()
            ax.set_xticks(ticks, [f"{t:.2g}" for t in ticks], fontsize=8)
        ax.set_xlabel(name)
        ax.set_ylabel("final objective")
    for ax in flat[1 + len(searched) :]:
        ax.axis("off")
    fig.suptitle("blue: completed, orange: stopped early", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_best_config(
    base: Config, search: Search, best: TrialRow, path: Path, experiment: str
) -> Config:
    """The base config with the search's fixed values, the best trial's values and no run
    name: `simgan train --config` takes it as it is and starts a fresh run."""
    params = {**fixed_params(search), **best.params}
    cfg = apply_params(base, params).replace(run={"name": ""})
    header = (
        f"# Best trial {best.trial} of search {experiment}: objective "
        f"{best.scores['objective']:.4g}.\n# Train it: simgan train --config {path}\n"
    )
    path.write_text(header + config_to_yaml(cfg))
    return cfg


def write_results(rows: list[TrialRow], search: Search, base: Config, out: Path) -> dict[str, Any]:
    """trials.md, trials.csv, objective.png and (with a scored trial) best-config.yaml in out."""
    out.mkdir(parents=True, exist_ok=True)
    best = best_row(rows)
    (out / "trials.md").write_text(markdown_table(rows, search, best))
    write_csv(rows, search, out / "trials.csv")
    plot(rows, search, out / "objective.png")
    summary: dict[str, Any] = {
        "table": str(out / "trials.md"),
        "csv": str(out / "trials.csv"),
        "plot": str(out / "objective.png"),
        "best_config": None,
    }
    if best is not None:
        write_best_config(base, search, best, out / "best-config.yaml", out.name)
        summary.update(best_config=str(out / "best-config.yaml"), best_trial=best.trial)
        summary.update(best_params=best.params, best_scores=best.scores)
    return summary
