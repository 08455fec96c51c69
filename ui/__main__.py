"""``python -m ui [PROJECT]``: open the window (on the demo project when no PROJECT is given)."""

import sys

from ui.app import main

sys.exit(main(sys.argv[1:]))
