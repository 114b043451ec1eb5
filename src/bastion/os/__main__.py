"""``python -m bastion.os``: see :mod:`bastion.os.runtime`."""

from __future__ import annotations

import sys

from bastion.os.runtime import main

if __name__ == "__main__":
    sys.exit(main())
