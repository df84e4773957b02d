"""``python -m nnspam``: the same as the ``nnspam`` command."""

import sys

from nnspam.front.cli import main

sys.exit(main())
