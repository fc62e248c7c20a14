"""``python -m vfiod.ctl``: the same as ``vfioctl``."""

import sys

from vfiod.ctl.main import main

sys.exit(main())
