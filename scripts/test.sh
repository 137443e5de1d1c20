#!/usr/bin/env bash
# The test command: hermetic tests, then the data tests (real models and datasets in ../shared;
# they skip with a reason when ../shared is absent).
set -uo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-.venv/bin/python}"
# LATELEX_SLOW=1 adds the slow measurements (each many minutes; CI leaves them out)
slow="not slow"
[ "${LATELEX_SLOW:-0}" = "1" ] && slow="slow or not slow"
"$PY" -m pytest -q -m "not data and ($slow)" --durations=10
fast=$?
"$PY" -m pytest -q -m "data and ($slow)" --durations=10
data=$?
# pytest exits 5 when it collected no test: not a failure for the data run on a machine without ../shared
[ "$data" -eq 5 ] && data=0
[ "$fast" -eq 0 ] && [ "$data" -eq 0 ]
