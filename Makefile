# `make run` and `make test` are the two commands the README opens with.
.PHONY: setup review-tools run test lock

setup:
	@bash scripts/setup.sh

review-tools:
	@bash scripts/setup-review-tools.sh

run: setup
	.venv/bin/python jobs/pseudolabel.py

test: setup review-tools
	.venv/bin/python -m pytest

# Re-resolve the pinned sets (requirements/*.txt) from pyproject.toml and requirements/review.in.
lock:
	@bash scripts/lock.sh
