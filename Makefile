# `make run` and `make test` are the two commands the README opens with.
.PHONY: setup run test

setup:
	@bash scripts/setup.sh

run: setup
	.venv/bin/python -m wsss_ray.toyworld demo

test: setup
	.venv/bin/python -m pytest
