# The README names these targets. `make demo` and `make test` each do all set-up on a fresh machine.
PY ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The CPU wheel; on a CUDA machine use e.g. `make install TORCH_SPEC=torch` (pulls a CUDA build).
TORCH_SPEC ?= torch==2.13.0
OUT ?= out

.PHONY: install services demo test lint bench week minimums clean

$(BIN)/stef-ray: pyproject.toml constraints.txt
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/pip install -q --disable-pip-version-check "$(TORCH_SPEC)"
	$(BIN)/pip install -q --disable-pip-version-check -c constraints.txt -e ".[peers,dev]"
	touch $@

install: $(BIN)/stef-ray

# Real servers the integration tests talk to (a time-series server with the InfluxDB v2 write API).
services:
	bash scripts/install_services.sh

# End to end on the built-in real dataset: fetch, train, short backtest, forecast.
demo: install
	$(BIN)/stef-ray data vic-elec --out data/vic_elec.csv
	$(BIN)/stef-ray train --config configs/vic_elec.yaml --data data/vic_elec.csv --out models/production
	$(BIN)/stef-ray backtest --config configs/vic_elec.yaml --data data/vic_elec.csv --start 2014-12-04 --days 28 --refit-every 0 --out $(OUT)/backtest
	$(BIN)/stef-ray forecast --model models/production --data data/vic_elec.csv --origin 2014-12-24 --out $(OUT)/forecast

test: install services
	$(BIN)/python -m pytest -q

# Three simulated weeks of the operations loop on real servers started here (docs/operations.md).
week: install services
	$(BIN)/python scripts/week_in_the_life.py

# The declared lower bound of every direct dependency, installed in $(MIN_VENV) and tested with the whole
# suite (torch stays at TORCH_SPEC; TORCH_SPEC=torch==2.2.0 tests its floor: see scripts/minimum_versions.py).
# Not part of `make test`.
MIN_VENV ?= .venv-min
minimums: services
	$(PY) -m venv $(MIN_VENV)
	$(MIN_VENV)/bin/pip install -q --disable-pip-version-check --upgrade pip
	$(MIN_VENV)/bin/pip install -q --disable-pip-version-check "$(TORCH_SPEC)"
	$(PY) scripts/minimum_versions.py > $(MIN_VENV)/minimums.txt
	$(MIN_VENV)/bin/pip install -q --disable-pip-version-check -c $(MIN_VENV)/minimums.txt -e ".[peers,dev]"
	$(MIN_VENV)/bin/python -m pytest -q

lint: install
	$(BIN)/ruff check stef_ray tests benchmarks

bench: install
	$(BIN)/python benchmarks/fit_speed.py
	$(BIN)/python benchmarks/accuracy.py
	$(BIN)/python benchmarks/serve_latency.py
	$(BIN)/python benchmarks/serve_hop_cost.py
	RAY_SERVE_USE_GRPC_BY_DEFAULT=0 $(BIN)/python benchmarks/serve_hop_cost.py

clean:
	rm -rf $(OUT) models mlruns mlflow.db ray_results
