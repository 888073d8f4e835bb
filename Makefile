# make run   : fresh machine -> virtualenv -> install -> train a small model on the toy task, print BLEU
# make test  : the test suite (real-data tests read $S2S_DATA_DIR, default ../shared/data)
# make reproduce / make bench: the comparison tables / the speed report under results/
VENV ?= .venv
PY := $(VENV)/bin/python
export S2S_DATA_DIR ?= $(abspath ../shared/data)
export WANDB_MODE ?= offline

.PHONY: install run test reproduce bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build first: a bare torch requirement would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,sweep]"
	touch $@

install: $(VENV)/.installed

run: install
	$(VENV)/bin/s2s-train experiment=quickstart

test: install
	$(PY) -m pytest -q

# make reproduce EXPERIMENT=multi30k_de_en_cpu: run the preset's grid (Hydra multirun), then the tables.
# A failed job does not stop the others; the tables are written from what finished.
# OVERRIDES="trainer=gpu" (or any Hydra override) applies to every job of the grid.
EXPERIMENT ?= multi30k_de_en_cpu
OVERRIDES ?=
reproduce: install
	$(VENV)/bin/s2s-train -m experiment=$(EXPERIMENT) hydra.sweep.dir=multirun/$(EXPERIMENT) $(OVERRIDES); status=$$?; \
	$(VENV)/bin/s2s-tables multirun/$(EXPERIMENT) --out results --readme README.md && exit $$status

# make bench BENCH_ARGS="--joeynmt": the speed report (results/benchmarks.md, .json, benchmarks_scaling.png).
bench: install
	$(VENV)/bin/s2s-bench $(BENCH_ARGS)

clean:
	rm -rf outputs multirun .pytest_cache
