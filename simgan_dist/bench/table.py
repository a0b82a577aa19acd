"""`simgan bench train`'s figures as a table: one row per configuration, then the ratios."""

from __future__ import annotations

from typing import Any

from simgan_dist.bench.cpu import ROLES, format_trust
from simgan_dist.bench.flops import format_flops, format_peak
from simgan_dist.bench.train import NUM_PROCESSES

RATIO_PAIR = ("ours_1w", "ours_2w")  # their ratio is also shown per round


def format_table(result: dict[str, Any]) -> str:
    cfg, machine = result["config"], result["machine"]
    lines = [
        f"simgan bench train: preset {cfg['preset']}, global batch {cfg['batch_size']}, "
        f"K_g/K_d {cfg['k_g']}/{cfg['k_d']}, image {'x'.join(map(str, cfg['image_shape']))}, "
        f"device {cfg['device']}",
        f"machine: {machine['cpu_count']} CPUs ({machine['cpus_usable']} usable), torch threads "
        f"{machine['torch_threads_default']} by default, 1 per loop/worker here; load average "
        f"(1 min) {machine['loadavg_before'][0]:.2f} before, "
        f"{machine.get('loadavg_after', [float('nan')])[0]:.2f} after",
    ]
    if "skipped" in result:
        return "\n".join([*lines, f"skipped: {result['skipped']}"])
    lines += [
        f"timed: {cfg['measured_nimg']} adversarial images per configuration; {cfg['rounds']} "
        f"round(s) of Ray runs, each timing {cfg['measured_intervals']} intervals of "
        f"{cfg['interval_nimg']} after {cfg['warmup_iters'] * cfg['iter_nimg']} warm-up images; "
        f"shards {cfg.get('shards', '')}",
        "",
        f"{'name':<13} {'workers':>7} {'images/s':>10} {'timed imgs':>10} {'timed s':>8} "
        f"{'fit wall s':>10}  images/s per part (in the order run)",
    ]
    workers = NUM_PROCESSES
    for name, r in result["results"].items():
        wall = f"{r['wall_s']:10.1f}" if "wall_s" in r else f"{'-':>10}"
        lines.append(
            f"{name:<13} {workers[name]:>7} {r['images_per_s']:10.1f} {r['measured_nimg']:>10} "
            f"{r['measured_s']:8.1f} {wall}  "
            + " / ".join(f"{x:.1f}" for x in r.get("parts_images_per_s", []))
        )
    one, two = (result["results"].get(k, {}).get("parts_images_per_s") for k in RATIO_PAIR)
    if one and two:
        per_round = ", ".join(f"{b / a:.2f}" for a, b in zip(one, two, strict=True))
        lines.append(f"ours_2w/ours_1w per round: {per_round}")
    lines += _cpu_lines(result["results"])
    lines += ["", f"{'ratio':<18} {'value':>6} {'target':>8}"]
    for key, r in result["ratios"].items():
        if r["target"] is None:
            what = {
                "bare_2p/ours_1w": "best 2w/1w here",
                "bare_compiled/bare": "torch.compile / eager",
                "loop_2p/bare_2p": "the loop's collectives",
                "ours_2w/loop_2p": "Ray, streams, outputs",
            }.get(key, "share of the ceiling")
            lines.append(f"{key:<18} {r['value']:6.3f} {'':>8}  ({what})")
        elif r["value"] is None:
            lines.append(f"{key:<18} {'-':>6} {'>= ' + str(r['target']):>8}  not measured")
        else:
            verdict = "met" if r["met"] else "MISSED"
            lines.append(f"{key:<18} {r['value']:6.3f} {'>= ' + str(r['target']):>8}  {verdict}")
    if "flops" in result:
        rows = {name: r["flops"] for name, r in result["results"].items()}
        lines += ["", format_peak(result["flops"]["peak"])]
        lines += format_flops(result["flops"]["per_image"], rows)
    lines += [f"note: {n}" for n in result["notes"]]
    if "trust" in result:
        lines.append(format_trust(result["trust"]))
    return "\n".join(lines)


def _cpu_lines(results: dict[str, Any]) -> list[str]:
    """Where the CPU went in the Ray runs' timed intervals (bench/cpu.py), one line each."""
    accounted = {name: r["cpu_cores"] for name, r in results.items() if "cpu_cores" in r}
    if not accounted:
        return []
    num_cpus = next((c["num_cpus"] for c in accounted.values() if c), None)
    lines = [
        "",
        f"CPU in the timed intervals, cores{f' of {num_cpus:.0f}' if num_cpus else ''}: training "
        "workers / their loaders / Ray and this driver / other / stolen by the hypervisor / idle;",
        "images/s per core the workers used",
    ]
    for name, cores in accounted.items():
        per_core = ""
        if cores and cores["workers"] > 0:
            per_core = f"; {results[name]['images_per_s'] / cores['workers']:.1f}"
        lines.append(f"{name:<10} {_cores(cores)}{per_core}")
        parts = results[name].get("parts_cpu_cores", [])
        if len(parts) > 1:
            lines += [f"  round {i + 1:<2} {_cores(c)}" for i, c in enumerate(parts)]
    return lines


def _cores(cores: dict[str, float] | None) -> str:
    if cores is None:
        return "-  (intervals shorter than the sampler's; raise --nimg)"
    return " / ".join(f"{cores[role]:.2f}" for role in ROLES)
