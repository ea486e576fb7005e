# kubetune: `make demo` runs the demo on a local cluster, `make test` runs the test suite.
# Both install what they need first (Debian packages, .venv, the pinned Kubernetes binaries).
.PHONY: setup demo demo-down test test-unit bench crds chart chart-push

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

# The Helm chart as an OCI artifact: dist/kubetune-<version>.tgz; `make chart-push REGISTRY=oci://host/path`.
chart:
	@bash deploy/release/package-chart.sh

chart-push:
	@test -n "$(REGISTRY)" || { echo "make chart-push REGISTRY=oci://host/path" >&2; exit 2; }
	@bash deploy/release/package-chart.sh $(REGISTRY)
