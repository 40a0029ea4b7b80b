"""`python -m stream.cli`: the same as the `skystream` command."""

import sys

from stream.cli.entry import main

sys.exit(main())
