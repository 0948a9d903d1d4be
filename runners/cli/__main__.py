"""``python -m runners.cli``: the ``obsflow`` command."""

import sys

from runners.cli import main

sys.exit(main())
