"""``python -m hub.cli``: the same as the ``lienthong`` command."""
import sys

from hub.cli.main import main

sys.exit(main())
