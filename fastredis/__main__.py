"""`python -m fastredis serve ...`: the same as the `fastredis` command."""

import sys

from fastredis.cli import main

if __name__ == "__main__":  # not when multiprocessing's spawn imports it (serve --workers)
    sys.exit(main())
