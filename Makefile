# The README's commands. Both honour ZOO_DATA (a folder holding fashion-mnist/ etc.); without it,
# zoo downloads the data into ~/.cache/zoo/data.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install demo test test-all lint bench clean

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

demo: install
	$(BIN)/zoo train baseline-cnn

test: install
	$(BIN)/pytest -q

test-all: install  # the slow tests too (pyproject's addopts skip them by default)
	$(BIN)/pytest -q -m ""

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

bench: install
	$(BIN)/python benchmarks/fashion_mnist_train.py
	$(BIN)/python benchmarks/facade_train.py

clean:
	rm -rf $(VENV) .pytest_cache
