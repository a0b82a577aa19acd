"""The S+U report as markdown, and the one headline line the demo and `simgan eval` print."""

from __future__ import annotations

from typing import Any


def _pct(value: float) -> str:
    return f"{100 * value:.2f}"


def _arm_row(name: str, arm: dict[str, Any]) -> str:
    return (
        f"| {name} | {_pct(arm['mean'])}% | [{_pct(arm['low'])}, {_pct(arm['high'])}] | "
        + ", ".join(_pct(v) for v in arm["per_seed"])
        + " |"
    )


def headline(report: dict[str, Any]) -> str:
    """One line: both arms, the paired difference with its interval, gap closed if known."""
    acc, diff = report["accuracy"], report["refined_minus_synthetic"]
    digits = "validation digits" if report.get("real_eval_role") == "validation" else "real digits"
    line = (
        f"accuracy on {digits}: synthetic {_pct(acc['synthetic']['mean'])}%  "
        f"refined {_pct(acc['refined']['mean'])}%  "
        f"difference {100 * diff['mean']:+.2f} points "
        f"(95% CI [{100 * diff['low']:+.2f}, {100 * diff['high']:+.2f}], {diff['num_seeds']} seeds)"
    )
    if "oracle" in acc:
        line += f"  oracle {_pct(acc['oracle']['mean'])}%"
    if report.get("gap_closed"):
        line += f"  gap closed {100 * report['gap_closed']['mean']:.0f}%"
    return line


def markdown_report(report: dict[str, Any]) -> str:
    acc, diff = report["accuracy"], report["refined_minus_synthetic"]
    rows = [_arm_row("synthetic", acc["synthetic"]), _arm_row("refined", acc["refined"])]
    if "oracle" in acc:
        rows.append(
            _arm_row(f"real, labeled (oracle, {report['num_oracle_train']} images)", acc["oracle"])
        )
    gap = report.get("gap_closed")
    gap_line = (
        f"Gap closed: {100 * gap['mean']:.1f}% (95% CI [{100 * gap['low']:.1f}, "
        f"{100 * gap['high']:.1f}]) of a {gap['gap_points']:.2f}-point gap.\n\n"
        if gap
        else "Gap closed: no oracle given (`--real-train-labeled`).\n\n"
    )
    pres, real = report["preservation"], report["realism_acc"]
    tested_on = (
        f"{report['num_real_eval']} labeled real *validation* digits: the real training digits, "
        "whose pixels (never their labels) the refiner trained on; the eval digits stay unread"
        if report.get("real_eval_role") == "validation"
        else f"{report['num_real_eval']} labeled real digits that no training reads"
    )
    return (
        "# S+U evaluation: digits\n\n"
        "The same classifier trained on each set for the same number of optimizer steps "
        f"({report['num_steps']}), tested on {tested_on}. Seed i of every arm starts from the "
        "same weights.\n\n"
        "| trained on | mean accuracy | 95% CI | per seed |\n|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n\n"
        f"Refined minus synthetic, paired by seed: {100 * diff['mean']:+.2f} points "
        f"(95% CI [{100 * diff['low']:+.2f}, {100 * diff['high']:+.2f}], {diff['num_seeds']} seeds).\n\n"
        + gap_line
        + f"Annotation preservation: the synthetic-trained classifiers give the kept label on "
        f"{_pct(pres['refined'])}% of the refined images ({_pct(pres['synthetic'])}% on the "
        "synthetic images themselves).\n\n"
        f"Realism (held-out accuracy of a fresh two-sample classifier; 50% = indistinguishable): "
        f"synthetic vs real {_pct(real['synthetic_vs_real'])}%, refined vs real "
        f"{_pct(real['refined_vs_real'])}%.\n\n"
        "Rows: synthetic, refined, real.\n\n![grid](grid.png)\n"
    )
