"""``python -m bastion.os``: see :mod:`bastion.os.runtime`.

Before anything else, an OS image built with the test fault ``fail-at-start``
(``bastion os build --fault fail-at-start``) exits with ``EXIT_FAULT``: the
stand-in for a broken OS release, which a trial boot must roll back.
"""

from __future__ import annotations

import sys
from pathlib import Path

import bastion
from bastion.images.os_payload import read_fault
from bastion.os.exitcodes import EXIT_FAULT
from bastion.os.runtime import main

if __name__ == "__main__":
    # The OS runs from its unpacked image: PYTHONPATH is the runtime directory.
    if read_fault(Path(bastion.__file__).parent.parent) == "fail-at-start":
        sys.stderr.write("os: this OS image carries the fault 'fail-at-start'; exiting\n")
        sys.exit(EXIT_FAULT)
    sys.exit(main())
