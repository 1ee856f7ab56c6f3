"""``python -m dynhat``: the same as the ``dynhat`` command."""

import sys

from dynhat.cli import main

sys.exit(main())
