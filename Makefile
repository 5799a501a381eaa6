# Two commands do everything on a fresh machine: `make reproduce` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PROFILE ?= default
# where pip takes torch from: empty = PyPI (the CUDA build on Linux, CPU on macOS);
# TORCH_INDEX=https://download.pytorch.org/whl/cpu for the CPU wheel on Linux
TORCH_INDEX ?=
export PATH := $(abspath $(BIN)):$(PATH)
export PYTHONUNBUFFERED := 1
# notebooks plot inline (the kernel's own backend), so executed notebooks keep their figures;
# the test targets stay headless
HEADLESS := MPLBACKEND=Agg

.PHONY: setup reproduce smoke base test test-fast lab workshop workshop-train notebooks clean-runs

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch pinned first: an unpinned torch would pull the newest CUDA wheels
	$(BIN)/python -m pip install -q torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(BIN)/python -m pip install -q -e ".[notebooks,dev]"
	# the kernel papermill and the notebooks run on: this venv's python
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (t2a-lib)" >/dev/null
	touch $(STAMP)

setup: $(STAMP)

reproduce: setup
	$(BIN)/python -m t2a_lib.run --profile $(PROFILE)

smoke: setup
	$(BIN)/python -m t2a_lib.run --profile smoke

# rebuild releases/ (the base model and the scorers that `default` starts from): the scratch
# profile's notebooks 00-02 train them on the default world, then they are exported
base: setup
	$(BIN)/python -m t2a_lib.run --profile scratch --only 00 01 02
	$(BIN)/python -m t2a_lib.model.release export papermill_runs/scratch

test: setup
	$(HEADLESS) $(BIN)/python -m pytest

test-fast: setup
	$(HEADLESS) $(BIN)/python -m pytest -m "not slow"

lab: setup
	$(BIN)/python -m ipykernel install --user --name t2a-lib --display-name "t2a-lib (.venv)"
	$(BIN)/jupyter lab --notebook-dir=notebooks

# listening and labelling pages for participants' browsers, and a live teacher's page, over a run
# folder (its preference pairs and BATON clips); answers land in $(RUN)/workshop/people/<id>/.
# HOST=0.0.0.0 serves the room's network: participants join by the printed URL or QR code
RUN ?= papermill_runs/$(PROFILE)
HOST ?= 127.0.0.1
workshop: setup
	$(BIN)/python -m t2a_lib.feedback.workshop_server --run-dir $(RUN) --host $(HOST)

# the room's labels trained on (DPO on pair verdicts, BATON HD + reward model on yes/no labels), then
# before / after on held-out prompts (what the teacher page's button starts): t2a_lib.feedback.workshop_train
workshop-train: setup
	$(BIN)/python -m t2a_lib.feedback.workshop_train --run-dir $(RUN)

# regenerate every .ipynb from its percent-format .py (the .py is the source of truth)
notebooks: setup
	$(BIN)/jupytext --update-metadata '{"kernelspec":{"name":"python3","display_name":"Python 3","language":"python"}}' --to ipynb notebooks/[0-9]*.py

clean-runs:
	rm -rf papermill_runs/smoke reports/smoke
