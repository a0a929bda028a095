# make demo | make test | make verify | make report | make reproduce-table1 [PROFILE=quick] | make sweep EXP=nb_table1 | make claims
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PROFILE ?= paper
# torch/torchvision pins: the releases this suite is tested with (pip finds them on our build
# machines' local index); override for another CUDA build, e.g. TORCH="torch torchvision".
TORCH  ?= torch==2.14.1 torchvision==0.29.1
RUN    := $(BIN)/python -m experiments.run
TABLE1 := nb_table1 awnn_table1

.PHONY: install test test-all check-device demo verify report reproduce-table1 tables tables-all claims publish gpu-queue sweep bench clean-results

install: $(VENV)/.installed
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e '.[test,wandb]'
	touch $@

# One process per core (pytest-xdist), one torch thread each: the suite is many small runs.
test: install
	OMP_NUM_THREADS=1 $(BIN)/pytest -n auto

test-all: install            ## include the slow tests
	OMP_NUM_THREADS=1 $(BIN)/pytest -n auto -m ""

check-device: install        ## device-sensitive checks on this host's GPU (CPU when none), one line each
	$(BIN)/python scripts/check_device.py

demo: install                ## trains embedded data (digits NB regimes, AWNN synthetic rows) into results/local (81 s on 2 idle cores); then yours | published | paper per cell
	OMP_NUM_THREADS=1 $(BIN)/python -m experiments.demo $(ARGS)

verify: install              ## re-train the first epochs of one published run per experiment, compare epoch by epoch (DATA_ROOT=... for real data sets)
	OMP_NUM_THREADS=1 $(BIN)/python -m experiments.verify $(if $(DATA_ROOT),--data-root $(DATA_ROOT)) $(ARGS)

report: install              ## results/report.html: ledger, tables, figures, provenance in one offline page (ARGS=--local: your runs)
	$(BIN)/python -m experiments.report $(ARGS)

reproduce-table1: install    ## NB Table 1 and AWNN Table 1 at PROFILE (paper | quick | smoke); ARGS=run.stack=true ...
	@for exp in $(TABLE1); do $(RUN) -m experiment=$$exp profile=$(PROFILE) $(ARGS) || exit 1; done
	@echo "your tables: $(foreach e,$(TABLE1),results/local/tables/$(e).md) (published: results/published/tables/)"

sweep: install               ## any experiment: make sweep EXP=nb_fashion PROFILE=quick
	$(RUN) -m experiment=$(EXP) profile=$(PROFILE) $(ARGS)

tables: install              ## rebuild a published table from its records: make tables EXP=nb_table1 (ARGS=--local: yours)
	$(BIN)/python -m experiments.tables $(EXP) profile=$(PROFILE) $(ARGS)

tables-all: install          ## rebuild every published table from its records (ARGS=--local: yours)
	$(BIN)/python -m experiments.tables --all $(ARGS)

claims: install              ## the claims ledger results/claims.md from the published records (ARGS=--local: yours)
	$(BIN)/python -m experiments.claims $(ARGS)

publish: install             ## copy a sweep's finished runs into results/published: make publish EXP=nb_table1 PROFILE=quick
	$(BIN)/python -m experiments.publish $(EXP) profile=$(PROFILE) $(ARGS)

gpu-queue: install           ## next chunk (< 9 GPU-min) of the paper-budget GPU queue: make gpu-queue ARGS="data.root=/data" (ARGS=--list)
	$(BIN)/python scripts/gpu_queue.py $(ARGS)

bench: install
	@for b in bench/bench_*.py; do echo "== $$b"; $(BIN)/python $$b --quick || exit 1; done

clean-results:                ## per-machine outputs only (published records are committed: see results/README.md)
	rm -rf results/hydra results/cache results/wandb results/local/hydra
