#!/usr/bin/env bash
# The main job on a fresh machine: install the serving side into .venv (first run only), then stream
# the default inputs through the embedded broker, workers and watcher. Extra arguments go to
# `skystream demo` (see `--help`).
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
bash "$root/deploy/local/setup.sh" serve
cd "$root"
exec .venv/bin/skystream demo "$@"
