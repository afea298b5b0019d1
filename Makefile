# The README's commands. Both honour ZOO_DATA (a folder holding fashion-mnist/ etc.); without it,
# zoo downloads the data into ~/.cache/zoo/data.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test test-all mutation mutation-ci lint bench report tables docs report-screenshot clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: install
	$(BIN)/zoo train baseline-cnn

# Tests run in a random order (pytest-randomly); SEED fixes it, so a failure in CI reproduces with
# `make test SEED=N`, and `make test SEED=$RANDOM` tries a new order.
SEED ?= 20261201

test: install
	$(BIN)/pytest -q -p randomly --randomly-seed=$(SEED)

test-all: install  # the slow tests too (pyproject's addopts skip them by default)
	$(BIN)/pytest -q -m ""

# Mutation testing of zoo's core with mutmut, a score per target in build/mutation/scores.txt
# (docs/testing.md); `make mutation MUTATE=metrics` runs one target (tests/mutation.py lists them).
MUTATE ?=
mutation: install
	$(BIN)/python tests/mutation.py $(MUTATE)

# The subset CI runs (a few minutes): fails when the sweep's objective target drops below 85%.
mutation-ci: install
	$(BIN)/python tests/mutation.py --min-score 0.85 sweep-objective

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install
	$(BIN)/python benchmarks/fashion_mnist_train.py
	$(BIN)/python benchmarks/facade_train.py

report: install  # the self-contained HTML report of everything under results/
	$(BIN)/zoo compare results --format html --out results/report.html

tables: install  # the result tables in README.md, docs/results.md, results/README.md and docs/benchmarks.md
	$(BIN)/zoo compare --refresh README.md --refresh docs/results.md --refresh results/README.md \
		--refresh docs/benchmarks.md

docs: install  # every command's --help in docs/commands.md
	$(BIN)/python docs/commands.py

report-screenshot: report  # what the report looks like in headless Chromium, wide and narrow
	for width in 1400 800; do \
		chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
			--disable-background-networking --disable-component-update --disable-sync \
			--user-data-dir=$$(mktemp -d) --hide-scrollbars --window-size=$$width,1700 \
			--screenshot=docs/report-screenshot-$$width.png file://$(CURDIR)/results/report.html; \
		$(BIN)/python -c "import sys; from PIL import Image; \
			Image.open(sys.argv[1]).convert('RGB').quantize(256).save(sys.argv[1], optimize=True)" \
			docs/report-screenshot-$$width.png; \
	done

clean:
	rm -rf $(VENV) .pytest_cache
