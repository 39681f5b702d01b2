"""``python -m tailfuse ...``: the ``tailfuse`` command, for environments without its script."""

import sys

from tailfuse.cli import main

sys.exit(main())
