"""``python -m server ...`` is the ``matchreplay`` command."""

import sys

from server.cli import main

sys.exit(main())
