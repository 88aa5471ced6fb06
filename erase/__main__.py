"""``python -m erase`` (and ``accelerate launch -m erase``) run the CLI."""

import sys

from erase.cli import main

sys.exit(main())
