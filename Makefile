# The two set-up commands: `make demo` and `make test`. Both create .venv when it is absent.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch goes in first, pinned: on machines without a GPU the local CPU wheel satisfies it,
# and a later unpinned requirement then installs nothing more.
TORCH_VERSION ?= 2.13.0
# The container image `make image` builds.
IMAGE ?= deepfleet:0.1.0

.PHONY: demo test install dev lint bench clean image image-lint constraints proto

$(PY):
	$(PYTHON) -m venv $(VENV)

$(VENV)/.torch: | $(PY)
	$(PIP) install --quiet torch==$(TORCH_VERSION)
	touch $@

$(VENV)/.installed: pyproject.toml $(VENV)/.torch
	$(PIP) install --quiet -e .
	touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/.installed
	$(PIP) install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

dev: $(VENV)/.dev

demo: install
	$(VENV)/bin/deepfleet run

test: dev
	$(PY) -m pytest

lint: dev
	$(VENV)/bin/ruff check src tests benchmarks
	$(VENV)/bin/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) runs .pytest_cache

# The container image (CUDA runtime base, non-root, deepfleet as the entrypoint). Needs a
# Docker engine; image-lint checks the Dockerfile with hadolint (from the dev extras).
image: image-lint
	docker build --build-arg TORCH_VERSION=$(TORCH_VERSION) -t $(IMAGE) .

image-lint: dev
	$(VENV)/bin/hadolint Dockerfile

# Re-pin the image's Python dependencies to the versions installed in $(VENV).
constraints: install
	$(PY) docker/constraints.py > docker/constraints.txt

# The gRPC modules of deploy/serve/_proto, regenerated from grpc_predict_v2.proto.
proto: dev
	PYTHON=$(PY) scripts/gen_proto.sh
