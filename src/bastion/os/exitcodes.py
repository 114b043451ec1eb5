"""Exit statuses of the OS process (``python -m bastion.os``), read by ``bastion device run``.

=====  ==================  =================================================================
code   name                meaning for ``device run``
=====  ==================  =================================================================
0      EXIT_OK             stopped normally (or ``--once`` attested)
1      EXIT_FAULT          the OS failed at start (e.g. the test fault ``fail-at-start``);
                           on a trial boot, ``device run`` boots again and the bootloader
                           rolls back
2      EXIT_ATTESTATION    attestation failed (``--once``) or another OS error
3      EXIT_MONITOR        the monitor failed; the OS cannot go on
4      EXIT_CONFIG         config or state error
10     EXIT_REBOOT         the OS asks to be booted again (an OS update is armed)
=====  ==================  =================================================================
"""

from __future__ import annotations

__all__ = ["EXIT_ATTESTATION", "EXIT_CONFIG", "EXIT_FAULT", "EXIT_MONITOR", "EXIT_OK", "EXIT_REBOOT"]

EXIT_OK = 0
EXIT_FAULT = 1
EXIT_ATTESTATION = 2
EXIT_MONITOR = 3
EXIT_CONFIG = 4
EXIT_REBOOT = 10
