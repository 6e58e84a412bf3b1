"""Every shipped example job file parses and builds its model."""

import pytest

from deepfleet.config import load_job, shipped_examples
from deepfleet.models import build_model

EXAMPLES = shipped_examples()


def test_the_default_example_is_shipped():
    assert "digits" in EXAMPLES


@pytest.mark.parametrize("name", sorted(EXAMPLES))
def test_example_parses_and_builds(name):
    job = load_job(EXAMPLES[name])
    model = build_model(job.model, (1, 8, 8), 10)
    assert sum(p.numel() for p in model.parameters()) > 0
