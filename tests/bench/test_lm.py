"""`deepfleet bench --job` on a causal language model: the job's task, tokens and MFU."""

from __future__ import annotations

import json

import pytest
import tomli_w
import torch

from deepfleet.bench import job_workload
from deepfleet.cli import run_cli

SEQ_LEN, VOCAB = 16, 300


def _lm_job(tmp_path) -> dict:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    words = "the quick brown fox jumps over a lazy dog while seven wizards quietly hum"
    for i in range(4):  # a few KB of text in a few files
        lines = [f"{i} {n}: {' '.join(words.split()[n % 7 :])} {n * 37}." for n in range(40)]
        (corpus / f"doc{i}.txt").write_text("\n".join(lines) + "\n")
    return {
        "run": {"name": "tinylm", "runs_dir": str(tmp_path / "runs"), "seed": 0},
        "task": {"name": "causal_lm"},
        "data": {
            "source": f"text:{corpus}",
            "seq_len": SEQ_LEN,
            "vocab_size": VOCAB,
            "shards": 1,
            "val_fraction": 0.1,
            "test_fraction": 0.1,
        },
        "model": {"name": "gpt", "params": {"dim": 16, "layers": 1, "heads": 2}},
        "train": {
            "batch_size": 8,
            "phases": [{"name": "main", "epochs": 1, "lr": 0.003, "optimizer": "adamw"}],
        },
    }


@pytest.mark.e2e
def test_bench_a_causal_lm_job_reports_tokens_per_second(tmp_path, capsys):
    job = tmp_path / "tinylm.toml"
    job.write_text(tomli_w.dumps(_lm_job(tmp_path)))
    out = tmp_path / "report"
    args = ["bench", "--job", str(job), "--steps", "2", "--repeats", "2", "--warmup", "1"]
    args += ["--backends", "torch", "--batch-sizes", "2", "--iterations", "2", "--out", str(out)]
    assert run_cli(args) == 0, capsys.readouterr().err
    report = json.loads((out / "bench.json").read_text())
    workload = report["workload"]
    assert workload["name"] == "job:tinylm" and "causal_lm" in workload["description"]
    assert workload["input_shape"] == [SEQ_LEN] and workload["tokens_per_sample"] == SEQ_LEN
    vocab = workload["num_classes"]
    assert 256 < vocab <= VOCAB  # the trained tokenizer's vocabulary sizes the model's output
    result = report["train"]["cpu"]
    assert result["tokens_per_s"]["median"] > 0
    assert result["tokens_per_s"]["median"] == pytest.approx(
        result["samples_per_s"]["median"] * SEQ_LEN
    )
    assert result["flops_per_step"] > 0 and result["mfu"] > 0
    assert [r["backend"] for r in report["infer"]] == ["torch"]
    assert "tokens/s" in (out / "bench.md").read_text()

    # The loss is the task's: the mean next-token cross-entropy over every target token.
    (data_dir,) = (tmp_path / "runs").glob("tinylm-*/shards")
    lm = job_workload(next((tmp_path / "runs").glob("tinylm-*/job.toml")), data_dir)
    x, y = next(lm.batches(4))
    assert x.dtype == torch.long and x.shape == y.shape == (4, SEQ_LEN)
    logits = lm.build()(x)
    assert logits.shape == (4, SEQ_LEN, vocab)
    expected = torch.nn.functional.cross_entropy(logits.flatten(0, 1), y.long().flatten())
    torch.testing.assert_close(lm.loss_fn(logits, y), expected)
