"""``python -m latelex.cli ...`` (also what ``torchrun -m latelex.cli train ...`` runs in every process)."""

import sys

from . import main

sys.exit(main())
