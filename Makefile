# The two commands of README.md: `make run` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
DATA ?= ./var
PYTEST_ARGS ?=

.PHONY: run test lint typecheck system-deps venv bench clean

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[test]'
	touch $@

venv: $(VENV)/.installed

system-deps:
	scripts/install-system-deps.sh

run: venv
	@[ -f $(DATA)/mss.toml ] || $(VENV)/bin/mss --data $(DATA) init --demo
	$(VENV)/bin/mss --data $(DATA) serve

lint: venv
	$(VENV)/bin/ruff check .

# mypy over the packages listed in pyproject.toml [tool.mypy] (the store, IMAP).
typecheck: venv
	$(VENV)/bin/mypy

test: venv system-deps lint typecheck
	$(VENV)/bin/python -m pytest -q -ra $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
