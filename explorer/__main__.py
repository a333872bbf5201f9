"""``python -m explorer …``: the command line (explorer/cli/main.py says what it offers)."""

import sys

from .cli.main import main

if __name__ == "__main__":
    sys.exit(main())
