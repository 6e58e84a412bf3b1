"""Writing a benchmark report: bench.json (the data), bench.md (for people), PNG charts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deepfleet._atomic import write_json_atomic, write_text_atomic
from deepfleet.bench._charts import energy_chart, scaling_chart, throughput_chart

JSON_NAME, MARKDOWN_NAME = "bench.json", "bench.md"
CHARTS = {
    "throughput_vs_batch.png": throughput_chart,
    "scaling.png": scaling_chart,
    "energy_per_sample.png": energy_chart,
}


def _num(value: float | None, digits: int = 3) -> str:
    if value is None:
        return "—"
    if value == 0 or 1e-3 <= abs(value) < 1e6:
        return f"{value:.{digits}g}" if abs(value) < 100 else f"{value:,.0f}"
    return f"{value:.{digits}e}"


def _spread(stat: dict[str, Any]) -> str:
    return f"{_num(stat['median'])} [{_num(stat['min'])}–{_num(stat['max'])}]"


def _energy_cell(energy: dict[str, Any]) -> str:
    if not energy["measured"]:
        return energy["note"]
    label = " (FAKE meter, test only)" if energy["fake"] else ""
    return (
        f"{_num(energy['joules_per_sample']['median'])} J/sample, "
        f"{_num(energy['watts']['median'])} W{label}"
    )


def _train_section(report: dict[str, Any]) -> list[str]:
    lines = ["## Training", ""]
    tokens = report["workload"]["tokens_per_sample"] > 1
    head = "| device | precision | batch | samples/s median [min–max] |"
    head += " tokens/s |" if tokens else ""
    head += " step ms | MFU | peak used | peak memory | energy |"
    lines += [head, "|" + "---|" * (head.count("|") - 1)]
    for device, r in report["train"].items():
        row = (
            f"| {device} ({r['device_name']}) | {r['precision']} | {r['batch_size']} | "
            f"{_spread(r['samples_per_s'])} |"
        )
        row += f" {_num(r['tokens_per_s']['median'])} |" if tokens else ""
        row += (
            f" {_num(r['step_seconds']['median'] * 1e3)} | {r['mfu'] * 100:.1f}% | "
            f"{_num(r['peak']['flops_per_s'] / 1e12)} TFLOP/s ({r['peak']['source']}) | "
            f"{r['peak_memory']['bytes'] / 2**20:,.0f} MiB | {_energy_cell(r['energy'])} |"
        )
        lines.append(row)
    for device, r in report["train"].items():
        phases = ", ".join(
            f"{p} {_num(v['median_ms'])} ms ({v['share'] * 100:.0f}%)"
            for p, v in r["phases"].items()
        )
        lines += [
            "",
            f"Step split on {device} (median per step): {phases}. "
            f"{r['repeats']} repeats of {r['steps_per_repeat']} steps after "
            f"{r['warmup_steps']} warm-up steps; {_num(r['flops_per_step'])} FLOPs per step "
            f"(torch.utils.flop_counter). Peak memory: {r['peak_memory']['what']}.",
        ]
        if "strategy" in r:
            lines[-1] += (
                f" The Trainer's step ran under strategy {r['strategy']}, precision "
                f"{r['train_precision']}, TF32 {'on' if r['tf32'] else 'off'}."
            )
        if "mfu_note" in r:
            lines += ["", f"MFU on {device}: {r['mfu_note']}."]
    return lines + [""]


def _infer_section(report: dict[str, Any]) -> list[str]:
    if not report["infer"]:
        return []
    lines = [
        "## Inference",
        "",
        "| device | backend | batch | p50 ms | p90 ms | p99 ms | samples/s | timed calls |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in report["infer"]:
        lines.append(
            f"| {r['device']} | {r['backend']} | {r['batch_size']} | {_num(r['p50_ms'])}"
            f" | {_num(r['p90_ms'])} | {_num(r['p99_ms'])} | {_num(r['samples_per_s'])}"
            f" | {r['n']} |"
        )
    return lines + [""]


def _comparison_section(report: dict[str, Any]) -> list[str]:
    comp = report.get("comparison")
    if not comp:
        return []
    lines = [
        "## Devices compared",
        "",
        f"Baseline: {comp['baseline']}. {comp['meaning']}.",
        "",
        "| device | speed ratio | energy ratio |",
        "|---|---|---|",
    ]
    for r in comp["rows"]:
        energy = _num(r["energy_ratio"]) if r["energy_ratio"] is not None else "not measured"
        lines.append(f"| {r['device']} | {_num(r['speed_ratio'])} | {energy} |")
    return lines + [""]


def _scaling_section(report: dict[str, Any]) -> list[str]:
    s = report.get("scaling")
    if not s:
        return []
    lines = [
        "## Scaling",
        "",
        f"Launcher: {s['launcher']}. Weak scaling: "
        f"{s['per_process_batch_size']} samples per process per step; efficiency is "
        f"per-process throughput over that of {s['baseline_nproc']} process(es).",
        "",
        "| processes | samples/s median [min–max] | efficiency | communication ms | threads/rank |",
        "|---|---|---|---|---|",
    ]
    for r in s["rows"]:
        comm = r["phases"].get("communication", {}).get("median_ms")
        lines.append(
            f"| {r['nproc']} | {_spread(r['samples_per_s'])} | "
            f"{r['efficiency'] * 100:.0f}% | {_num(comm)} | {r['threads_per_rank']} |"
        )
    return lines + [f"- {n}" for n in s["notes"]] + [""]


def _environment_section(report: dict[str, Any]) -> list[str]:
    env = report["environment"]
    gpus = ", ".join(d["name"] for d in env["cuda_devices"]) or "none"
    return [
        "## Environment",
        "",
        f"- CPU: {env['cpu']} ({env['cpu_cores']} cores); GPUs: {gpus}; "
        f"NVIDIA driver: {env['nvidia_driver'] or 'none'}",
        f"- torch CPU threads: {report['settings'].get('torch_cpu_threads')}",
        f"- torch {env['torch']} (CUDA {env['cuda'] or 'none'}), onnxruntime "
        f"{env['onnxruntime']}, zeus {env['zeus']}, Python {env['python']}",
        f"- deepfleet commit {env['git_commit'] or 'unknown'}; measured at {env['measured_at']}",
        "",
    ]


def markdown(report: dict[str, Any]) -> str:
    w = report["workload"]
    lines = [f"# Benchmark: {w['name']}", "", w["description"], ""]
    if any(r["energy"]["fake"] for r in report["train"].values()):
        lines += [
            "**Energy figures come from a FAKE meter (tests only); they are not measurements.**",
            "",
        ]
    lines += _train_section(report) if report["train"] else []
    lines += _infer_section(report) + _comparison_section(report) + _scaling_section(report)
    lines += _environment_section(report)
    lines += ["## Notes", ""] + [f"- {n}" for n in report["notes"]]
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], folder: Path) -> dict[str, Path]:
    """bench.json, bench.md and every chart that has data; returns what was written."""
    folder = Path(folder)
    written = {}
    for name, chart in CHARTS.items():
        if chart(report, folder / name) is not None:
            written[name] = folder / name
    report["charts"] = sorted(written)
    missing = [n for n in CHARTS if n not in written]
    if "energy_per_sample.png" in missing and report["train"]:
        report["notes"].append("no energy chart: no device had a readable energy meter")
    write_json_atomic(folder / JSON_NAME, report)
    write_text_atomic(folder / MARKDOWN_NAME, markdown(report))
    return {JSON_NAME: folder / JSON_NAME, MARKDOWN_NAME: folder / MARKDOWN_NAME, **written}
