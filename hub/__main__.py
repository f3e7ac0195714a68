"""``python -m hub``: the lienthong command line."""
import sys

from hub.cli.main import main

sys.exit(main())
