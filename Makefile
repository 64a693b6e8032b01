# aiofetch: every target installs what it needs into .venv first.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo run test lint clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev,dask]'
	touch $(STAMP)

demo: install
	$(PY) tests/demo.py

run: install
	$(VENV)/bin/aiofetch -i sample_urls.txt -d downloads

test: install
	$(PY) -m pytest -q

# Not part of `make test`: roughly 20-30 min at full size; a trial: make bench BENCH_ARGS=--quick
# The million-line rerun soak runs only when named: make bench BENCH_ARGS="--sets soak"
.PHONY: bench
bench: install
	$(PY) tests/bench.py $(BENCH_ARGS)

lint: install
	$(VENV)/bin/ruff check aiofetch tests
	$(VENV)/bin/mypy --strict aiofetch

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache downloads
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
