"""``python -m merits``: the CLI, also under ``accelerate launch -m merits train ...`` / ``torchrun -m merits``."""

import sys

from merits.cli import main

sys.exit(main())
