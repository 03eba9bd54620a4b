# `make run` and `make test` are the two commands the README opens with.
.PHONY: setup review-tools run test docs lock

setup:
	@bash scripts/setup.sh

review-tools:
	@bash scripts/setup-review-tools.sh

run: setup
	.venv/bin/python jobs/pseudolabel.py

test: setup review-tools
	.venv/bin/python -m pytest

# The documentation site (MkDocs Material) from docs/ into site/; --strict: a broken link or reference fails.
# `make test` builds it too (tests/test_docs.py), so CI does.
docs: setup
	NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true .venv/bin/mkdocs build --strict --site-dir site

# Re-resolve the pinned sets (requirements/*.txt) from pyproject.toml and requirements/review.in.
lock:
	@bash scripts/lock.sh
