"""`python -m fastredis serve ...`: the same as the `fastredis` command."""

import sys

from fastredis.cli import main

sys.exit(main())
