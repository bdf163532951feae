# fedface: `make demo`, `make test`, `make bench`. Each creates .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export FLWR_TELEMETRY_ENABLED := 0
export FLWR_DISABLE_UPDATE_CHECK := 1
export RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO := 0

.PHONY: demo demo-docs test test-slow bench bench-federation flwr-run flwr-stop venv clean

venv: $(STAMP)

# torch first (the CPU build on disk); any other spec would pull a multi-GB CUDA build
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# with/without masking under attack: none vs ppfr_fd+adamixup, gradient inversion + learned reconstruction, on ORL
# (synthetic faces with a loud note when ORL is not on disk); prints the table and the path of report.html
demo: $(STAMP)
	$(VENV)/bin/fedface compare experiment=demo $(OVERRIDES_DEMO)

# README's lead table and plot (docs/results/compare-demo.*, docs/compare-demo-*.png) from the last demo
demo-docs: $(STAMP)
	$(PY) scripts/summaries/compare_docs.py results/demo --name compare-demo

test: $(STAMP)
	$(PY) -m pytest -q

test-slow: $(STAMP)
	$(PY) -m pytest -q -m slow

bench: $(STAMP)
	$(PY) scripts/bench/bench_masking.py
	$(PY) scripts/bench/bench_training.py
	$(PY) scripts/bench/bench_federation.py
	$(PY) scripts/diagnostics/attack_fixture.py
	$(PY) scripts/bench/bench_attacks.py

# `flwr run` of the same apps on Flower's local simulation SuperLink, offline, with a project-local Flower home.
# usage: make flwr-run OVERRIDES="data=orl protect=ppfr_fd federation.num_clients=4 federation.rounds=5" NODES=4
FLWR_ENV = PATH="$(CURDIR)/$(VENV)/bin:$$PATH" FLWR_HOME="$(CURDIR)/.flwr" FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION=1
NODES ?= 4
OVERRIDES ?= federation.num_clients=$(NODES)
flwr-run: $(STAMP)  # the simulated nodes' privacy policy: the one the overrides imply (fedface/federation/policy.py)
	$(PY) -m fedface.federation.policy .flwr/node-policy.yaml $(OVERRIDES)
	$(FLWR_ENV) FEDFACE_POLICY="$(CURDIR)/.flwr/node-policy.yaml" flwr run . local-simulation --stream \
	  --federation-config "num-supernodes=$(NODES) client-resources-num-cpus=1" \
	  -c 'overrides="$(OVERRIDES)" run-dir="$(CURDIR)/results/flwr-run-'$$(date +%Y%m%d-%H%M%S)'"'

flwr-stop:  # the local SuperLink that `flwr run` starts keeps running; this stops it
	-pkill -f "flower-superlink.*$(CURDIR)/.flwr"

clean:
	rm -rf $(VENV) results .pytest_cache
