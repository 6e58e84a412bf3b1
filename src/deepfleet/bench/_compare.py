"""`deepfleet bench compare A.json B.json`: the ratio B/A of every figure both reports have."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from deepfleet._atomic import read_json
from deepfleet.errors import UserError

# metric suffix -> True when higher is better (used to say which side won)
_HIGHER_IS_BETTER = {
    "samples/s": True,
    "tokens/s": True,
    "MFU": True,
    "step ms": False,
    "J/sample": False,
    "p50 ms": False,
    "p99 ms": False,
    "efficiency": True,
}


def load_report(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: benchmark report not found")
    report = read_json(path, "a JSON benchmark report")
    if not isinstance(report, dict) or not str(report.get("schema", "")).startswith(
        "deepfleet.bench/"
    ):
        raise UserError(f"{path}: not a deepfleet bench report (no deepfleet.bench schema)")
    return report


def figures(report: dict[str, Any]) -> dict[str, float]:
    """Every comparable number of a report, keyed 'area device ... metric'."""
    out: dict[str, float] = {}
    for device, r in report.get("train", {}).items():
        out[f"train {device} samples/s"] = r["samples_per_s"]["median"]
        out[f"train {device} step ms"] = r["step_seconds"]["median"] * 1e3
        out[f"train {device} MFU"] = r["mfu"]
        if "tokens_per_s" in r:
            out[f"train {device} tokens/s"] = r["tokens_per_s"]["median"]
        if r["energy"]["measured"] and not r["energy"]["fake"]:
            out[f"train {device} J/sample"] = r["energy"]["joules_per_sample"]["median"]
    for r in report.get("infer", []):
        key = f"infer {r['device']} {r['backend']} batch {r['batch_size']}"
        out[f"{key} samples/s"] = r["samples_per_s"]
        out[f"{key} p50 ms"] = r["p50_ms"]
        out[f"{key} p99 ms"] = r["p99_ms"]
    for r in (report.get("scaling") or {}).get("rows", []):
        out[f"scaling {r['nproc']} procs samples/s"] = r["samples_per_s"]["median"]
        out[f"scaling {r['nproc']} procs efficiency"] = r["efficiency"]
    return out


def compare_reports(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of (figure, a, b, ratio b/a, better) for the figures both reports have."""
    fa, fb = figures(a), figures(b)
    rows = []
    for key in fa:
        if key not in fb:
            continue
        ratio = fb[key] / fa[key] if fa[key] else None
        higher = next((v for k, v in _HIGHER_IS_BETTER.items() if key.endswith(k)), True)
        better = None if ratio is None or ratio == 1 else ("B" if (ratio > 1) == higher else "A")
        rows.append({"figure": key, "a": fa[key], "b": fb[key], "ratio": ratio, "better": better})
    if not rows:
        raise UserError("the two reports have no figure in common (different workloads?)")
    return rows
