# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# The AWS CLI (v1, from PyPI) in a venv of its own (it pins its own botocore): the
# tests drive it with ssmshell as its session-manager-plugin.
AWSCLI := .venv-awscli/bin/aws

.PHONY: demo test lint venv clean

$(BIN)/ssmshell: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

$(AWSCLI):
	$(PYTHON) -m venv .venv-awscli
	.venv-awscli/bin/pip install -q 'awscli==1.46.3'

venv: $(BIN)/ssmshell

demo: $(BIN)/ssmshell
	$(BIN)/ssmshell demo

lint: $(BIN)/ssmshell
	$(BIN)/ruff check ssmshell tests bench
	$(BIN)/mypy --strict ssmshell/protocol

test: lint $(AWSCLI)
	SSMSHELL_AWS_CLI=$(abspath $(AWSCLI)) $(BIN)/pytest -q

clean:
	rm -rf $(VENV) .venv-awscli build *.egg-info .pytest_cache .mypy_cache .ruff_cache .hypothesis
