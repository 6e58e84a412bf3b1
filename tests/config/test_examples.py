"""Every shipped example job file parses and builds its model."""

import pytest

from deepfleet.config import load_job, shipped_examples
from deepfleet.models import build_model

EXAMPLES = shipped_examples()


def test_the_default_example_is_shipped():
    assert "digits" in EXAMPLES


def _shapes(job) -> tuple[tuple[int, ...], int]:
    """Sample shape and output size of the example's data, without preparing it."""
    if job.task.name == "causal_lm":
        return (job.data.seq_len,), job.data.vocab_size
    if job.data.source == "diabetes":
        return (10,), 1
    return (1, 8, 8), 10


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_parses_and_builds(name):
    job = load_job(EXAMPLES[name])
    model = build_model(job.model, *_shapes(job))
    assert sum(p.numel() for p in model.parameters()) > 0


def test_the_task_examples_are_shipped():
    assert load_job(EXAMPLES["tinylm"]).task.name == "causal_lm"
    assert load_job(EXAMPLES["diabetes"]).task.name == "regression"
