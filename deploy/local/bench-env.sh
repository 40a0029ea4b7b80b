#!/usr/bin/env bash
# Create or refresh .venv-bench: the serving side plus lightkurve, for tests/benchmarks/bench_tess_speed.py.
# Usage: deploy/local/bench-env.sh   then   .venv-bench/bin/python tests/benchmarks/bench_tess_speed.py
# lightkurve lives here and not in .venv: resolving an open `lightkurve>=2.5` next to the serving
# pins sends pip into a long backtrack, and lightkurve 2.6's s3fs/aiobotocore chain drags botocore
# below what the installed boto3 needs. A pinned release in a fresh venv resolves in one pass.
# Reused while pyproject.toml and the pin are unchanged (a stamp keyed by their hash).
set -euo pipefail
lightkurve=${LIGHTKURVE_VERSION:-2.5.1}
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
py=${PYTHON:-python3.11}
command -v "$py" >/dev/null 2>&1 || py=python3
"$py" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' \
  || { echo "SkyStream needs Python 3.11 (found $("$py" --version 2>&1))" >&2; exit 1; }

key=$( (cat pyproject.toml; echo "lightkurve==$lightkurve") | sha256sum | cut -c1-16)
stamp=.venv-bench/.skystream-bench-$key
if [ ! -f "$stamp" ]; then
  echo "[bench-env] installing SkyStream (serving side) and lightkurve $lightkurve into .venv-bench" >&2
  [ -x .venv-bench/bin/python ] || "$py" -m venv .venv-bench
  .venv-bench/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  .venv-bench/bin/python -m pip install -q --disable-pip-version-check -e . "lightkurve==$lightkurve"
  rm -f .venv-bench/.skystream-bench-*
  touch "$stamp"
fi
echo "[bench-env] ready: .venv-bench/bin/python tests/benchmarks/bench_tess_speed.py" >&2
