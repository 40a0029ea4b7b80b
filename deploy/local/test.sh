#!/usr/bin/env bash
# The test suite on a fresh machine: install serving + training + test tools into .venv (first run
# only; Prometheus from Debian when root), lint, then run pytest. Extra arguments go to pytest.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bash "$root/deploy/local/setup.sh" full
cd "$root"
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -ra "$@"
