#!/bin/bash
# usage: queue.sh FILE  (one exp.py argument line per line); runs 2 at a time
cd /work/wt13
export PYTHONPATH=/work/wt13:/work/scratch13
xargs -P 2 -L 1 -a "$1" bash -c 'name=$(echo "$@" | sed -E "s/.*--name ([^ ]+).*/\1/"); seed=$(echo "$@" | grep -oE "seed [0-9]+" | cut -d" " -f2); /work/main/.venv/bin/python /work/scratch13/exp.py "$@" > /work/scratch13/logs/${name}_s${seed:-0}.log 2>&1' _
