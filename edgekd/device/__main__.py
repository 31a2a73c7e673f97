"""``python -m edgekd.device``: the device-side command on this machine."""

import sys

from .cli import main

sys.exit(main())
