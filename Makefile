# The two commands of the README. Both set up what they need first (scripts/setup.sh).
.PHONY: demo test setup clean

setup:
	@bash scripts/setup.sh

demo: setup
	@.venv/bin/python scripts/demo.py

test: setup
	@bash scripts/test.sh

clean:
	@.venv/bin/gtnb lab down 2>/dev/null || true
