"""train.profile: Chrome traces and top operators in report/profile/; system figures per epoch."""

import json

import pytest
import torch

from deepfleet.config import PhaseSection, ProfileSection, TrainSection
from deepfleet.data import SplitArrays
from deepfleet.models import mlp
from deepfleet.train import MetricsLog, Trainer, read_metrics


def toy_split(n=128, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 4, 4, generator=g)
    y = (x.flatten(1).sum(1) > 0).long()
    return SplitArrays(ids=torch.arange(n), x=x, y=y)


def fit(tmp_path, profile):
    config = TrainSection(
        batch_size=32, phases=[PhaseSection(epochs=2, lr=0.1)], profile=profile, log_every=100
    )
    run = tmp_path / "run"
    metrics = run / "metrics.jsonl"
    run.mkdir()
    torch.manual_seed(0)
    model = mlp((1, 4, 4), 2, hidden=[8])
    log = MetricsLog(metrics)
    try:
        result = Trainer(
            config, model, torch.device("cpu"), log=log, checkpoint_dir=run / "checkpoints"
        ).fit(toy_split(), toy_split(64, seed=1))
    finally:
        log.close()
    return run, result, list(read_metrics(metrics))


def test_profile_writes_a_chrome_trace_and_top_ops(tmp_path):
    run, _, records = fit(tmp_path, ProfileSection(wait=0, warmup=1, active=2, repeat=1))
    folder = run / "report" / "profile"
    (trace,) = folder.glob("trace-step*.json")
    events = json.loads(trace.read_text())["traceEvents"]
    assert any(str(e.get("name", "")).startswith("aten::") for e in events)
    top = (folder / "top_ops.md").read_text()
    assert "```" in top and "aten::" in top
    (record,) = [r for r in records if r["kind"] == "profile"]
    assert (run / record["trace"]) == trace and (run / record["top_ops"]).is_file()


def test_epoch_records_carry_system_figures_and_no_profile_when_off(tmp_path):
    run, result, records = fit(tmp_path, None)
    assert not (run / "report").exists()
    assert not [r for r in records if r["kind"] == "profile"]
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert len(epochs) == 2 == len(result.history)
    for record in epochs:
        assert record["peak_rss_mb"] > 0
        assert 0 <= record["cpu_util"] <= record["cpu_cores"]
        assert "energy_j" in record or record["energy"].startswith("not measured")
        assert "peak_device_memory_mb" not in record  # CPU training


def test_no_checkpoint_folder_means_no_profile(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = TrainSection(batch_size=32, profile=ProfileSection(wait=0, warmup=0, active=1))
    trainer = Trainer(config, mlp((1, 4, 4), 2, hidden=[8]), torch.device("cpu"))
    assert trainer.profile_dir is None
    trainer.fit(toy_split())
    assert not list(tmp_path.rglob("*.json"))


def test_profile_settings_are_checked():
    with pytest.raises(ValueError):
        ProfileSection(active=0)
    with pytest.raises(ValueError):
        ProfileSection(wait=-1)
    assert TrainSection().profile is None
    assert TrainSection(profile={}).profile == ProfileSection(wait=1, warmup=1, active=3, repeat=1)
