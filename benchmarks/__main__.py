"""`python -m benchmarks [--quick] [--only ...] [--profile]`: see benchmarks/run.py."""

import sys

from .run import main

sys.exit(main())
