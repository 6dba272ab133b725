# Two commands for a newcomer:  `make lab`  and  `make test`.
# Both create .venv (pinned versions from pyproject.toml) when it is missing or stale.

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
KERNEL := llm-serving-course
# Jupyter refuses to run as root unless told; learners in containers are often root.
ROOT_FLAG := $(if $(filter 0,$(shell id -u)),--allow-root,)
LAB_ARGS ?=
# 2 CPU threads are enough and keep timings stable on a shared laptop.
export OMP_NUM_THREADS ?= 2
export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export PYTHONHASHSEED := 0

.PHONY: lab test test-under-load setup setup-dev kernel exercises release check test-unit test-notebooks clean slides site grade

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	touch $@

$(VENV)/.installed-dev: $(VENV)/.installed
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/.installed kernel
setup-dev: $(VENV)/.installed-dev kernel

kernel: $(VENV)/.installed
	@$(PY) -m ipykernel install --sys-prefix --name $(KERNEL) \
	    --display-name "LLM serving course" > /dev/null

## Open the course in JupyterLab on the welcome notebook.
lab: setup
	$(VENV)/bin/jupyter lab $(ROOT_FLAG) --ServerApp.root_dir="$(CURDIR)" \
	    --LabApp.default_url=/lab/tree/notebooks/00_welcome.ipynb $(LAB_ARGS)

## Regenerate exercises/ from solutions/ (the single source of truth), with the public expected results.
exercises: $(VENV)/.installed
	$(PY) -m course_lib.exercises solutions exercises

## The bundle students get, in release/: lessons, exercises, course_lib; no solutions, no answer keys, no grader.
release: $(VENV)/.installed
	$(PY) -m course_lib.grading.release release

## Check a learner's work (the public cases): make check EXERCISE=exercises/01_padding.ipynb
check: $(VENV)/.installed
	$(PY) -m course_lib.checks $(EXERCISE)

## Every test: unit, property, oracle, then the notebooks under nbval.
## A lesson's checked claim that does not hold fails its cell here (course_lib/claims.py).
test: export COURSE_STRICT_CLAIMS := 1
test: setup-dev
	$(VENV)/bin/ruff check .
	$(PY) -m pytest tests
	$(PY) -m pytest --nbval-lax --nbval-current-env notebooks
	$(PY) -m pytest --nbval --nbval-current-env --nbval-sanitize-with tests/nbval_sanitize.cfg solutions

## Every lesson again with a competing CPU load on one core: each checked claim must still hold.
test-under-load: export COURSE_STRICT_CLAIMS := 1
test-under-load: setup-dev
	$(PY) tools/with_load.py $(PY) -m pytest --nbval-lax --nbval-current-env notebooks

test-unit: setup-dev
	$(PY) -m pytest tests

## Lecture slides: a reveal.js deck per lesson in slides/ (offline: reveal.js and plotly.js are copied beside them).
slides: setup-dev
	$(PY) tools/publish.py slides notebooks slides

## A static site: execute every lesson and render it to HTML in site/ (interactive figures, offline).
site: setup-dev
	$(PY) tools/publish.py site notebooks site

## Grade students' notebooks: make grade SUBMISSIONS="submissions/*/01_padding.ipynb" GRADE_ARGS="--json results.json"
grade: setup-dev
	$(PY) -m course_lib.grade $(SUBMISSIONS) $(GRADE_ARGS)

## Measure the course's speed and memory claims side by side: table in results/benchmarks.md, charts in results/benchmarks.html.
.PHONY: bench bench-quick
bench: setup-dev
	$(PY) -m benchmarks

## The same, reduced sizes (under 2 minutes on 2 CPU cores).
bench-quick: setup-dev
	$(PY) -m benchmarks --quick

## Verify the course on one CUDA GPU (at most about 8 minutes): the GPU kernel tests, the Triton
## decode benchmark, the suite and every lesson with COURSE_DEVICE=cuda (tools/gpu_check.py says
## more). Uses .venv's Python if there is one, else python3 (with its own CUDA torch); a missing
## Jupyter stack comes from wheelhouse/ (make wheelhouse, where PyPI is reachable). No GPU: one line, exit 2.
.PHONY: gpu-check wheelhouse
GPU_PYTHON ?= $(if $(wildcard $(PY)),$(PY),python3)
GPU_CHECK_ARGS ?=
gpu-check:
	@$(GPU_PYTHON) tools/gpu_check.py $(GPU_CHECK_ARGS)

## The wheels gpu-check installs on a GPU machine without the Jupyter stack (CPython 3.12, under 64 MiB; no torch).
wheelhouse: $(VENV)/.installed
	$(PY) tools/build_wheelhouse.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .gpu-env
