# One-command set-up and runs. `make demo` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
# The set-up pins the torch build that this machine's disk holds; users may install any torch>=2.1.
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
DEMO_OUT ?= outputs/demo
HORSES   ?= ../shared/data/weizmann-horse
# auto: the GPU when there is one (1-2 min on an H100); cpu: the deterministic run of benchmarks/results/demo.md
DEMO_DEVICE ?= auto
PYTEST_ARGS ?= -n 2 -q

.PHONY: setup test demo clean benchmarks

$(VENV)/.installed: setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q $(TORCH_SPEC)
	$(PY) -m pip install -q -e '.[test]'
	touch $@

setup: $(VENV)/.installed

test: setup
	$(PY) -m pytest $(PYTEST_ARGS)

demo: setup
	$(VENV)/bin/saliency demo --images $(HORSES) --out $(DEMO_OUT) --device $(DEMO_DEVICE)

benchmarks: setup
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) outputs runs *.egg-info
