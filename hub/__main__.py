"""``python -m hub``: the lienthong command line."""
import sys

from hub.cli import main

sys.exit(main())
