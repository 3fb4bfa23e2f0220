"""`python -m broker`: the `broker` command (broker/app/cli.py)."""

import sys

from broker.app.cli import main

sys.exit(main())
