# `make run` and `make test` are the two commands the README opens with.
.PHONY: setup run test

setup:
	@bash scripts/setup.sh

run: setup
	.venv/bin/python jobs/pseudolabel.py

test: setup
	.venv/bin/python -m pytest
