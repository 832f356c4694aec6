"""``python -m riversync`` runs the same CLI as the ``riversync`` command."""

import sys

from riversync.cli import main

sys.exit(main())
