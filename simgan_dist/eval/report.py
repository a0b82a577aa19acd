"""The S+U report as markdown, and the one headline line the demo and `simgan eval` print."""

from __future__ import annotations

from typing import Any

from simgan_dist.eval.arms import DESCRIPTIONS

# How the report says which preservation figure is which: key -> (judge, images judged).
PRESERVATION_LINES = {
    "refined": ("synthetic", "refined"),
    "synthetic": ("synthetic", "synthetic"),
    "refined_by_randomized": ("randomized", "refined"),
    "randomized": ("randomized", "randomized"),
}


def _pct(value: float) -> str:
    return f"{100 * value:.2f}"


def _points(diff: dict[str, Any]) -> str:
    """A paired difference as '+1.23 points (95% CI [+0.10, +2.36], 5 seeds)'."""
    return (
        f"{100 * diff['mean']:+.2f} points (95% CI [{100 * diff['low']:+.2f}, "
        f"{100 * diff['high']:+.2f}], {diff['num_seeds']} seeds)"
    )


def _arm_row(name: str, arm: dict[str, Any]) -> str:
    return (
        f"| {name} | {_pct(arm['mean'])}% | [{_pct(arm['low'])}, {_pct(arm['high'])}] | "
        + ", ".join(_pct(v) for v in arm["per_seed"])
        + " |"
    )


def _image_arms(report: dict[str, Any]) -> list[str]:
    """The image arms in report order (a report from before arms were data has two)."""
    return list(report.get("arms") or ("synthetic", "refined"))


def headline(report: dict[str, Any]) -> str:
    """One line: synthetic and refined with their paired difference, then, when the report has
    them, randomized with refined - randomized, mixed with mixed - randomized, ceiling, the
    oracle and gap closed."""
    acc, diff = report["accuracy"], report["refined_minus_synthetic"]
    digits = "validation digits" if report.get("real_eval_role") == "validation" else "real digits"
    line = (
        f"accuracy on {digits}: synthetic {_pct(acc['synthetic']['mean'])}%  "
        f"refined {_pct(acc['refined']['mean'])}%  "
        f"difference {_points(diff)}"
    )
    if "randomized" in acc:
        vs = report["refined_minus_randomized"]
        line += (
            f"  randomized {_pct(acc['randomized']['mean'])}%  refined - randomized "
            f"{100 * vs['mean']:+.2f} [{100 * vs['low']:+.2f}, {100 * vs['high']:+.2f}]"
        )
    if "mixed" in acc:
        vs = report["mixed_minus_randomized"]
        line += (
            f"  mixed {_pct(acc['mixed']['mean'])}%  mixed - randomized "
            f"{100 * vs['mean']:+.2f} [{100 * vs['low']:+.2f}, {100 * vs['high']:+.2f}]"
        )
    if "ceiling" in acc:
        line += f"  ceiling {_pct(acc['ceiling']['mean'])}%"
    if "oracle" in acc:
        line += f"  oracle {_pct(acc['oracle']['mean'])}%"
    if report.get("gap_closed"):
        line += f"  gap closed {100 * report['gap_closed']['mean']:.0f}%"
    return line


def _accuracy_table(report: dict[str, Any]) -> str:
    acc = report["accuracy"]
    rows = [_arm_row(DESCRIPTIONS.get(name, name), acc[name]) for name in _image_arms(report)]
    if "oracle" in acc:
        rows.append(
            _arm_row(f"real, labeled (oracle, {report['num_oracle_train']} images)", acc["oracle"])
        )
    return (
        "| trained on | mean accuracy | 95% CI | per seed |\n|---|---|---|---|\n"
        + "\n".join(rows)
        + "\n\n"
    )


def _differences(report: dict[str, Any]) -> str:
    lines = [
        f"Refined minus synthetic, paired by seed: {_points(report['refined_minus_synthetic'])}."
    ]
    if "refined_minus_randomized" in report:
        lines.append(
            "Refined minus randomized, paired by seed (what refinement buys over the cheap "
            f"alternative): {_points(report['refined_minus_randomized'])}."
        )
    if "mixed_minus_randomized" in report:
        lines.append(
            "Mixed minus randomized, paired by seed (what refined images add to randomized "
            f"ones, at the same number of images): {_points(report['mixed_minus_randomized'])}."
        )
    for name, diff in (report.get("arm_minus_synthetic") or {}).items():
        if name != "refined":
            lines.append(f"{name.capitalize()} minus synthetic: {_points(diff)}.")
    return "\n\n".join(lines) + "\n\n"


def _gap_lines(report: dict[str, Any]) -> str:
    gap = report.get("gap_closed")
    if not gap and "oracle" in report["accuracy"]:
        return "Gap closed: undefined, the oracle is no better than synthetic.\n\n"
    if not gap:
        return "Gap closed: no oracle given (`--real-train-labeled`).\n\n"
    text = (
        f"Gap closed: {100 * gap['mean']:.1f}% (95% CI [{100 * gap['low']:.1f}, "
        f"{100 * gap['high']:.1f}]) of a {gap['gap_points']:.2f}-point gap.\n\n"
    )
    others = {
        name: g
        for name, g in (report.get("gap_closed_by_arm") or {}).items()
        if name != "refined" and g
    }
    if others:
        text += (
            "Gap closed by the other arms: "
            + ", ".join(
                f"{name} {100 * g['mean']:.1f}% [{100 * g['low']:.1f}, {100 * g['high']:.1f}]"
                for name, g in others.items()
            )
            + ".\n\n"
        )
    return text


def _judge_name(report: dict[str, Any], judge: str) -> str:
    """'randomized (one classifier, 24 epochs)' for a judge trained apart from its arm."""
    epochs = report.get("converged_judges", {}).get(judge)
    return f"{judge} (one classifier, {epochs} epochs)" if epochs else f"{judge} (per seed)"


def _preservation(report: dict[str, Any]) -> str:
    pres = report["preservation"]
    text = (
        "Annotation preservation (each judge's classifiers on images, against the labels the "
        "images kept):\n\n| judge (trained on) | images | kept label |\n|---|---|---|\n"
        + "\n".join(
            f"| {_judge_name(report, judge)} | {images} | {_pct(pres[key])}% |"
            for key, (judge, images) in PRESERVATION_LINES.items()
            if key in pres
        )
        + "\n\n"
    )
    if "refined_by_randomized" in pres:
        text += (
            "Which to read: a classifier trained on the simulator's white-on-black digits fails "
            "on any realistic image whatever its label, so on an appearance-gap target the "
            "synthetic judge mixes appearance with label change; the randomized judge has seen "
            "every colour and texture and reads only the digit. It is trained apart from its "
            "arm, to convergence: read its figure on its own images as its error floor.\n\n"
        )
    return text


def _realism(report: dict[str, Any]) -> str:
    real = report["realism_acc"]
    return (
        "Realism (held-out accuracy of a fresh two-sample classifier; 50% = indistinguishable): "
        + ", ".join(
            f"{name} vs real {_pct(real[f'{name}_vs_real'])}%"
            for name in _image_arms(report)
            if f"{name}_vs_real" in real
        )
        + ".\n\n"
    )


def _grids(report: dict[str, Any]) -> str:
    text = "Rows: synthetic, refined, real (the images tested on).\n\n![grid](grid.png)\n"
    grids = report.get("grids") or {}
    if grids:
        text += "\nOne row per arm, the same synthetic samples in each:\n\n" + "\n".join(
            f"{name}: ![{name}](grid_{name}.png)\n" for name in grids
        )
    return text


def markdown_report(report: dict[str, Any]) -> str:
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
        + _accuracy_table(report)
        + _differences(report)
        + _gap_lines(report)
        + _preservation(report)
        + _realism(report)
        + _grids(report)
    )
