# Two set-up commands: `make run` (the whole stack) and `make test` (everything tested).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
MMTRITON := $(VENV)/bin/mmtriton
STAMP := $(VENV)/.installed

.PHONY: run test lint venv system-deps model repository serve bench soak reliability clean rehearse

$(STAMP): requirements.lock pyproject.toml
	@echo "==> creating $(VENV) and installing pinned packages (a few minutes the first time)"
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip==24.3.1
	$(PY) -m pip install --quiet -r requirements.lock
	$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	$(MMTRITON) setup-server
	touch $(STAMP)

venv: $(STAMP)

system-deps:
	@bash scripts/install-system-deps.sh

model: venv system-deps
	$(MMTRITON) build

repository: model
	$(MMTRITON) export

run: repository
	$(MMTRITON) up

serve: repository
	$(MMTRITON) serve

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: repository lint
	$(VENV)/bin/pytest -ra

clean:
	rm -rf artifacts reports

# The served pipeline against in-process baselines (3-5 minutes; see docs/performance.md).
bench: repository
	$(MMTRITON) bench --perf-analyzer

# Hostile inputs, overload, a 40 s soak, security, and faults injected into `mmtriton serve`
# (about 6 minutes): writes reports/reliability.json, prints the table with each target,
# exits 1 when one is missed (docs/reliability.md).
reliability: repository
	$(MMTRITON) reliability

# The soak alone: SOAK_SECONDS of mixed load (default 10 minutes), reports/soak.json; exits 1
# unless RSS growth after warm-up is < 5 % (also reported as bytes per 10k requests).
soak: repository
	SOAK_SECONDS=$${SOAK_SECONDS:-600} $(MMTRITON) reliability --only soak --out reports/soak.json

# The rendered manifests played here the way a kubelet would (k8s/rehearsal, docs/kubernetes.md):
# the CPU overlay comes up Ready, answers held-out samples through its Service and heals (a
# killed stub, a frozen container restarted by liveness); the GPU overlay must stop at its
# first GPU step with a message naming the missing GPU. Logs: artifacts/rehearsal/.
rehearse: repository
	$(PY) -m k8s.rehearsal --overlay cpu --heal
	$(PY) -m k8s.rehearsal --overlay gpu --expect gpu-missing
