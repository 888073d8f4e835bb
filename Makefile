# make run   : fresh machine -> virtualenv -> install -> a small GRU and Transformer on Multi30k de->en,
#              their comparison table and attention page under outputs/demo/ (python -m experiments.demo)
# make test  : lint (ruff, rules in pyproject.toml), then the test suite (real-data tests read $S2S_DATA_DIR,
#              default ../shared/data)
# make reproduce / make tables: the comparison tables under results/ and docs/results.md
# make bench: the speed report under outputs/bench/ (BENCH_ARGS="--out results --readme docs/performance.md"
#              replaces the committed one)
VENV ?= .venv
PY := $(VENV)/bin/python
# The offline mirror beside the clone when there is one; else the default data root (downloads go there).
export S2S_DATA_DIR ?= $(if $(wildcard ../shared/data),$(abspath ../shared/data))
export WANDB_MODE ?= offline

.PHONY: install run test reproduce grid tables bench lease-prepare clean

# .core: what `make run` needs (torch and the project); .installed: also the tests, sweeps and the
# analysis extras (eflomal compiles from source: about a minute that `make run` does not wait for).
$(VENV)/.core: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# The CPU build first: a bare torch requirement would pull a multi-GB CUDA build.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e .
	touch $@

$(VENV)/.installed: $(VENV)/.core
	$(PY) -m pip install -q -e ".[dev,sweep,analysis]"
	touch $@

install: $(VENV)/.installed

# make run OVERRIDES="trainer.max_steps=100": Hydra overrides reach both trainings.
run: $(VENV)/.core
	$(PY) -m experiments.demo $(OVERRIDES)
	@test -f $(VENV)/.installed || echo "The README's other recipes (tests, Optuna and Slurm sweeps, s2s-compare, s2s-align \
	--eflomal) need the extras: make install (about a minute more: eflomal compiles)."

test: install
	$(VENV)/bin/ruff check models experiments tests
	$(PY) -m pytest -q --durations=20

# make reproduce EXPERIMENT=multi30k_de_en_cpu: run the preset's grid (Hydra multirun), then the tables.
# A failed job does not stop the others; the tables are written from what finished.
# OVERRIDES="trainer=gpu" (or any Hydra override) applies to every job of the grid.
EXPERIMENT ?= multi30k_de_en_cpu
OVERRIDES ?=
reproduce: install
	$(VENV)/bin/s2s-train -m experiment=$(EXPERIMENT) hydra.sweep.dir=multirun/$(EXPERIMENT) $(OVERRIDES); status=$$?; \
	$(VENV)/bin/s2s-tables multirun/$(EXPERIMENT) --out results --readme docs/results.md && exit $$status

# make grid: the converged reference tables on this machine, resumable. Run it again after any
# interruption: finished jobs are skipped, interrupted ones resume from last.pt, two one-thread jobs
# side by side. Run folders: $(S2S_RUNS_DIR) (default ~/s2s-runs), outside the work tree.
# make grid UNTIL=06:50: only what can end by then (s2s-grid --until).
# make tables: export the finished runs' outputs to results/runs/ and rebuild the tables from them (results/*.md and
# their copies in docs/results.md).
GRID ?= multi30k_de_en samsum:1 aeslc:1 multi30k_en_de:1 samsum:2,3 aeslc:2,3
S2S_RUNS_DIR ?= $(HOME)/s2s-runs
grid: install
	mkdir -p $(S2S_RUNS_DIR)
	nohup $(VENV)/bin/s2s-grid $(GRID) --runs-dir $(S2S_RUNS_DIR) $(if $(UNTIL),--until $(UNTIL)) $(OVERRIDES) \
	    >> $(S2S_RUNS_DIR)/grid.log 2>&1 &
	@echo "grid started in the background; progress: $(VENV)/bin/s2s-grid $(GRID) --status; log: $(S2S_RUNS_DIR)/grid.log"

tables: install
	for e in $(sort $(foreach g,$(GRID),$(firstword $(subst :, ,$(g))))); do \
	  if ls $(S2S_RUNS_DIR)/$$e/*/*/results.json >/dev/null 2>&1; then \
	    $(VENV)/bin/s2s-tables $(S2S_RUNS_DIR)/$$e --export results/runs --out results --readme docs/results.md || exit 1; fi; done
	$(VENV)/bin/s2s-tables --out results --summary README.md

# make bench BENCH_ARGS="--joeynmt": the speed report (outputs/bench/benchmarks.md, .json, benchmarks_scaling.png).
bench: install
	$(VENV)/bin/s2s-bench $(BENCH_ARGS)

# make lease-prepare: what a lent GPU needs beside the work tree, in .lease/ (carried there; about 6 MB): wheels of
# the packages its Python lacks (python -m experiments.training.lease, docs/scaling.md), at this venv's versions,
# for CPython $(LEASE_PYTHON) on x86-64 Linux, and the Multi30k mirror. pyarrow stays behind (55 MB): the lease
# checks the GPU machine's own at once.
LEASE_PYTHON ?= 3.12
LEASE_PACKAGES := hydra[-_]core omegaconf datasets dill multiprocess fsspec sacrebleu nltk
LEASE_BUILT := antlr4[-_]python3[-_]runtime rouge[-_]score
lease-prepare: install
	rm -rf .lease && mkdir -p .lease/wheels .lease/data
	$(PY) -m pip download -q --no-deps --only-binary=:all: --python-version $(LEASE_PYTHON) --implementation cp \
	    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	    --platform any -d .lease/wheels $$($(PY) -m pip freeze | grep -iE '^($(subst $(eval) ,|,$(LEASE_PACKAGES)))==')
	$(PY) -m pip wheel -q --no-deps -w .lease/wheels $$($(PY) -m pip freeze | grep -iE '^($(subst $(eval) ,|,$(LEASE_BUILT)))==')
	cp -r $(S2S_DATA_DIR)/multi30k .lease/data/
	@ls .lease/wheels; du -sh .lease

clean:
	rm -rf outputs multirun .pytest_cache
