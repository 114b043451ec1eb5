"""A planted ``bastion`` package: the hostile app's attempt to run code inside the sandbox's launcher.

``/app`` comes first on the app's ``sys.path``. Were the launcher to import
``bastion.applibs`` with ``/app`` already on the path, this file would run
before the launcher's ``sandbox.hello`` and could send a forged one (when the
app was started with ``--attack forge_hello``). Its ``__path__`` points at the
real package (the next ``bastion`` on the path), so everything else of ``bastion.applibs`` still works.
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
__path__ = [
    os.path.join(entry, "bastion")
    for entry in sys.path
    if os.path.isfile(os.path.join(entry, "bastion", "__init__.py")) and os.path.join(entry, "bastion") != _HERE
]
FORGED = None

if "forge_hello" in " ".join(sys.argv):
    from bastion.applibs import RequestError, connection

    try:
        connection().call(
            "sandbox.hello",
            {
                "landlock": {"abi": 99, "fs": True, "net": True, "scoped": ["forged"]},
                "rlimits": {"nproc": 1},
                "seccomp_filters": 7,
                "no_new_privs": True,
                "capabilities": 0,
                "uid": 0,
            },
        )
        FORGED = "accepted"
    except RequestError as exc:
        FORGED = type(exc).__name__
