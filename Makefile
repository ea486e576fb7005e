# kubetune: `make demo` runs the demo on a local cluster, `make test` runs the test suite.
# Both install what they need first (Debian packages, .venv, the pinned Kubernetes binaries).
.PHONY: setup demo demo-down test test-unit bench crds

PY := .venv/bin/python

setup:
	@bash deploy/local/setup.sh

demo: setup
	@bash deploy/local/demo.sh

demo-down:
	@bash deploy/local/demo.sh down

test: setup
	$(PY) -m pytest

test-unit:
	$(PY) -m pytest -m "unit"

bench: setup
	$(PY) -m pytest -m bench -s tests/bench

crds:
	$(PY) -m kubetune.api.crdgen
