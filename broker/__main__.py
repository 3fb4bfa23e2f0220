"""`python -m broker`: the `broker` command (broker/cli.py)."""

import sys

from broker.cli import main

sys.exit(main())
