"""`python -m insightloop.daemon` runs the CLI."""

import sys

from insightloop.daemon.cli import main

sys.exit(main())
