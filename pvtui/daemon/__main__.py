"""``python -m pvtui.daemon``: start pvd (clients do this on demand)."""

import sys

from pvtui.daemon.main import main

sys.exit(main())
