#!/usr/bin/env bash
# Set up latelex in .venv and run the main job offline: index SciFact (5,183 abstracts) with the
# all-MiniLM-L6-v2 token vectors, search its 300 test queries and evaluate. About 5 minutes on 2 CPU cores.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED="${LATELEX_SHARED:-../shared}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0
.venv/bin/python -m pip install -q -e ".[test]"
set -x
.venv/bin/latelex index runs/scifact-minilm --model "$SHARED/models/all-MiniLM-L6-v2" \
    --collection "$SHARED/datasets/scifact" --query-maxlen 64 --doc-maxlen 256 --overwrite
.venv/bin/latelex search runs/scifact-minilm --queries "$SHARED/datasets/scifact" --split test \
    --qrels "$SHARED/datasets/scifact" --output runs/scifact-minilm.trec
.venv/bin/latelex search runs/scifact-minilm --query "Vitamin D deficiency raises the risk of cancer" -k 3
