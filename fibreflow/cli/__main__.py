"""``python -m fibreflow.cli``: the same as the ``fibreflow`` command."""

import sys

from fibreflow.cli import main

sys.exit(main())
