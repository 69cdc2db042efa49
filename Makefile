# trainserve: `make demo` runs the main job end to end on this machine; `make test` sets up and passes the tests.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: venv demo test test-repeat e2e-local lint k8s-schemas crds crds-check manifests manifests-check pin-images pin-images-check constraints constraints-check bench bench-quick bench-training bench-serving clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[operator,workloads,dev]'
	touch $(STAMP)

# Train the digits example on a local Ray, serve it, query both protocols, shut down (a few minutes).
demo: venv
	$(PY) examples/demo.py

# Two pytest workers; the modules that start Ray run one after another on one of them (tests/conftest.py).
test: venv lint crds-check manifests-check
	$(PY) -m pytest -n 2

# End to end without a cluster: the operator as its own process, real Ray clusters run by the process-level
# KubeRay stand-in (tests/support/kuberay_local.py; needs root for its mount namespaces). Also part of `make test`.
e2e-local: venv
	$(PY) -m pytest -q -p no:randomly tests/e2e_local

# The operator suites (integration, packaging, and chaos once it exists) five times in a row, in a fixed order,
# stopping at the first failure: a test that fails one run in a few shows up here, not in the next CI run.
test-repeat: venv
	@for run in $$(seq 5); do \
	  echo "test-repeat: run $$run of 5"; \
	  $(PY) -m pytest -q -p no:randomly tests/integration tests/packaging $$([ -d tests/chaos ] && echo tests/chaos) \
	    || { echo "test-repeat: run $$run failed"; exit 1; }; \
	done

lint: venv
	$(VENV)/bin/ruff check operator workloads tests benchmarks examples
	$(VENV)/bin/ruff format --check operator workloads tests benchmarks examples
	$(VENV)/bin/mypy --strict operator/trainserve workloads/trainserve_workloads

# Kubernetes' pod schemas for spec.podTemplate, vendored from one release (operator/trainserve/api/k8s/README.md).
k8s-schemas: venv
	$(PY) deploy/vendor_k8s_schemas.py

crds: venv
	$(VENV)/bin/trainserve crds --output-dir crds

# `make crds` must leave crds/ as it is: the checked-in CRDs are what the models generate.
crds-check: venv
	@tmp=$$(mktemp -d) && $(VENV)/bin/trainserve crds --output-dir $$tmp && \
	  diff -ru crds $$tmp > /dev/null || { diff -ru crds $$tmp; echo "crds/ is stale: run 'make crds' and commit"; rm -rf $$tmp; exit 1; }; \
	  rm -rf $$tmp

# The chart's copy of the CRDs and deploy/install.yaml (the chart rendered with default values), from crds/.
manifests: crds
	$(PY) deploy/render.py

# `make manifests` must leave charts/trainserve/crds and deploy/install.yaml as they are.
manifests-check: venv
	$(PY) deploy/render.py --check

# Base images by digest: resolves every tag of deploy/base-images.lock with `crane` or `skopeo` (registry access
# needed) and writes the digests into the Dockerfiles. pin-images-check: the Dockerfiles agree with the lock.
pin-images: venv
	$(PY) deploy/pin_images.py

pin-images-check: venv
	$(PY) deploy/pin_images.py --check

# The images' pip constraints (constraints/*.txt) from this venv; run after changing pyproject.toml.
constraints: venv
	$(PY) deploy/lock_python.py

constraints-check: venv
	$(PY) deploy/lock_python.py --check

# Every benchmark in one run (serving, training, autoscaling, operator): tables printed, results in
# benchmarks/results/<date>.json, .md and .png. bench-quick takes a few minutes, bench about half an hour.
bench: venv
	$(PY) -m benchmarks --profile

bench-quick: venv
	$(PY) -m benchmarks --quick

bench-training: venv
	$(PY) -m benchmarks.training

bench-serving: venv
	$(PY) -m benchmarks.serving

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
