"""``python -m petalgym``: the ``petalgym`` command."""

import sys

from petalgym.cli import main

sys.exit(main())
