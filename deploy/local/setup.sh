#!/usr/bin/env bash
# Create or refresh the project's virtual environment (.venv) with everything the given extras need.
# Usage: deploy/local/setup.sh [serve|full]
#   serve: the serving side only (no TensorFlow), enough for `skystream demo`.
#   full:  serving + training (TensorFlow, tf2onnx) + test tools + Prometheus and Chromium from Debian +
#          Apache Kafka's jars from Maven Central (deploy/kafka/fetch.sh: Java 17 and Maven from Debian if missing).
# The venv is reused while pyproject.toml and the mode are unchanged (a stamp keyed by their hash),
# so a second run costs a second.
set -euo pipefail
mode=${1:-serve}
root=$(cd "$(dirname "$0")/../.." && pwd)
cd "$root"
py=${PYTHON:-python3.11}
command -v "$py" >/dev/null 2>&1 || py=python3
"$py" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' \
  || { echo "SkyStream needs Python 3.11 (found $("$py" --version 2>&1))" >&2; exit 1; }

case "$mode" in
  serve) extras="" ;;
  full) extras="[train,test]" ;;
  *) echo "usage: $0 [serve|full]" >&2; exit 2 ;;
esac

key=$( (cat pyproject.toml; echo "$mode") | sha256sum | cut -c1-16)
stamp=.venv/.skystream-$key
if [ ! -f "$stamp" ]; then
  echo "[setup] installing SkyStream ($mode) into .venv — the first time takes a few minutes" >&2
  [ -x .venv/bin/python ] || "$py" -m venv .venv
  .venv/bin/python -m pip install -q --disable-pip-version-check --upgrade pip
  .venv/bin/python -m pip install -q --disable-pip-version-check -e ".$extras"
  rm -f .venv/.skystream-*
  touch "$stamp"
fi

if [ "$mode" = full ] && { ! command -v prometheus >/dev/null 2>&1 || ! command -v amtool >/dev/null 2>&1; }; then
  # Metrics tests run against a real Prometheus from Debian.
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing Prometheus from Debian" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus prometheus-alertmanager >/dev/null) \
      || echo "[setup] could not install prometheus; the tests that need it will be skipped" >&2
  else
    echo "[setup] prometheus not installed and not root; the tests that need it will be skipped" >&2
  fi
fi

if [ "$mode" = full ] && ! command -v chromium >/dev/null 2>&1; then
  # The web view's tests load its pages in headless Chromium from Debian.
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing Chromium from Debian" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
      || echo "[setup] could not install chromium; the tests that need it will be skipped" >&2
  else
    echo "[setup] chromium not installed and not root; the tests that need it will be skipped" >&2
  fi
fi

if [ "$mode" = full ]; then
  # Durability, fault and security tests run on Apache Kafka (docs/kafka.md); cached by the pom's hash.
  bash deploy/kafka/fetch.sh >/dev/null
fi
