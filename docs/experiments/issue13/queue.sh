#!/bin/bash
# usage: queue.sh FILE  (one exp.py argument line per line); runs 2 at a time
cd .
export PYTHONPATH=.:scratch13
xargs -P 2 -L 1 -a "$1" bash -c 'name=$(echo "$@" | sed -E "s/.*--name ([^ ]+).*/\1/"); seed=$(echo "$@" | grep -oE "seed [0-9]+" | cut -d" " -f2); .venv/bin/python scratch13/exp.py "$@" > scratch13/logs/${name}_s${seed:-0}.log 2>&1' _
