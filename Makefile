# make demo  - install (first time) and run the demo on the embedded stack
# make test  - install (first time) and run the whole test suite
.PHONY: install demo test lint bench

install: .venv/.installed

.venv/.installed: pyproject.toml deploy/install.sh
	bash deploy/install.sh
	touch $@

demo: install
	.venv/bin/faceauth demo

test: install
	.venv/bin/ruff check .
	.venv/bin/mypy
	.venv/bin/lint-imports
	.venv/bin/python -m pytest -q

lint: install
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy
	.venv/bin/lint-imports

bench: install
	.venv/bin/python tests/bench/run_all.py
