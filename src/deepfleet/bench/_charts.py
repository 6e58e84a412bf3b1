"""PNG charts of a benchmark report (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)


def throughput_chart(report: dict[str, Any], path: Path) -> Path | None:
    """Inference samples/s against batch size, one line per (device, backend)."""
    series: dict[str, list[tuple[int, float]]] = {}
    for row in report["infer"]:
        series.setdefault(f"{row['device']} {row['backend']}", []).append(
            (row["batch_size"], row["samples_per_s"])
        )
    if not series:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, points in sorted(series.items()):
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("batch size")
    ax.set_ylabel("inference samples/s")
    ax.set_title(f"{report['workload']['name']}: throughput against batch size")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    return _save(fig, path)


def scaling_chart(report: dict[str, Any], path: Path) -> Path | None:
    """Training samples/s and scaling efficiency against the number of processes."""
    scaling = report.get("scaling")
    if not scaling or not scaling["rows"]:
        return None
    rows = scaling["rows"]
    n = [r["nproc"] for r in rows]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4))
    left.plot(n, [r["samples_per_s"]["median"] for r in rows], marker="o", label="measured")
    base = rows[0]["samples_per_s"]["median"] / rows[0]["nproc"]
    left.plot(n, [base * k for k in n], linestyle="--", label="linear")
    left.set_xlabel("processes")
    left.set_ylabel("training samples/s")
    left.legend()
    right.bar([str(k) for k in n], [r["efficiency"] * 100 for r in rows])
    right.axhline(100, color="grey", linestyle="--")
    right.set_xlabel("processes")
    right.set_ylabel("scaling efficiency, %")
    fig.suptitle(f"{report['workload']['name']}: scaling on {scaling['device']}")
    return _save(fig, path)


def energy_chart(report: dict[str, Any], path: Path) -> Path | None:
    """Joules per training sample by device; None when no device had a readable meter."""
    measured = {d: r["energy"] for d, r in report["train"].items() if r["energy"]["measured"]}
    if not measured:
        return None
    fig, ax = plt.subplots(figsize=(6, 4))
    labels = [f"{d}{' (FAKE meter)' if e['fake'] else ''}" for d, e in measured.items()]
    ax.bar(labels, [e["joules_per_sample"]["median"] for e in measured.values()])
    ax.set_ylabel("joules per training sample (median)")
    ax.set_title(f"{report['workload']['name']}: energy per sample")
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
