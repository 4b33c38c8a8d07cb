# Two commands for learners: `make lab` and `make test`. Everything else is for maintainers.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# The CPU wheel. Installed before the project so that no CUDA build is ever pulled in.
# With an NVIDIA GPU, override it, e.g. `make lab TORCH="torch==2.13.0"` from a CUDA index.
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed
# Notebooks run on this many kernels at once, each on one thread, sharing a recipe cache for the run
# (xmodal_ref/common/recipe_cache.py; see docs/DECISIONS.md).
NBVAL_WORKERS ?= 2

.PHONY: lab test e2e grade solutions bench lint clean-venv

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

# Rooted at the repository, so the banks in questions/ open in the Lab and links between them and the
# notebooks resolve. As root (containers, cloud notebooks) Jupyter refuses to start without --allow-root.
lab: $(STAMP)
	@if [ "$$(id -u)" = 0 ]; then echo "note: running as root, so JupyterLab starts with --allow-root"; fi
	$(BIN)/jupyter lab --ServerApp.root_dir="$(CURDIR)" $$( [ "$$(id -u)" = 0 ] && echo --allow-root ) \
	  notebooks/00_start.ipynb

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest --maintainer -q
	$(BIN)/pytest --solutions -q tests/test_grading.py
	cache=$$(mktemp -d) && XMODAL_RECIPE_CACHE=$$cache OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 \
	  $(BIN)/pytest --nbval-lax -q -n $(NBVAL_WORKERS) --dist loadfile --no-loadscope-reorder \
	    notebooks solutions; \
	  status=$$?; rm -rf $$cache; exit $$status

# Not part of `make test`: drives JupyterLab in headless Chromium (Debian: apt-get install chromium chromium-driver).
e2e: $(STAMP)
	$(BIN)/python -m pip install --quiet "selenium>=4.20"
	$(BIN)/pytest -q --e2e tests/e2e

grade: $(STAMP)
	$(BIN)/pytest -q tests/test_grading.py

solutions: $(STAMP)
	$(BIN)/python -m xmodal_ref.grading.authoring

bench: $(STAMP)
	$(BIN)/python -m benchmarks

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

clean-venv:
	rm -rf $(VENV)
