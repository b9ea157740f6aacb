import sys

from pvtui.cli.main import main

sys.exit(main())
