"""`python -m rankface ...`: the `rankface` command, for environments where its script is not on PATH."""

import sys

from rankface.cli import main

sys.exit(main())
