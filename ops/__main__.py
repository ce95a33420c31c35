"""`python -m ops` is `hpp-tracker`."""

import sys

from ops.cli import main

sys.exit(main())
