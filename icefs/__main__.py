"""``python -m icefs``: the icefs command line."""

from __future__ import annotations

import sys

from icefs.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
