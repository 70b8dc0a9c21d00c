#!/usr/bin/env bash
# Runs the whole test suite from the repo root with the project's virtual environment.
# Two workers, one test file each at a time (--dist loadfile: a file's module-scoped lab stays
# in one worker): the lab tests spend most of their time waiting on real drains and health
# checks, so two of them share the 2 cores well (12 min serial -> 6 min measured).
# GTNB_TEST_WORKERS=0 runs serially; extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
workers=${GTNB_TEST_WORKERS:-2}
if [ "$workers" = 0 ]; then
    exec .venv/bin/python -m pytest -ra "$@"
fi
exec .venv/bin/python -m pytest -ra -n "$workers" --dist loadfile "$@"
