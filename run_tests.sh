#!/usr/bin/env bash
# Run the linter, then the test suite; makes .venv on first use. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")"
. ./bootstrap.sh requirements-dev.txt
ruff check --quiet .
exec python -m pytest "$@"
