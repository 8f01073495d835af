"""`python -m stream` is the `stream` command (see `stream --help`)."""

import sys

from stream.app.cli import main

if __name__ == "__main__":
    sys.exit(main())
