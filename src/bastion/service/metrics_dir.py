"""The multiprocess directory of the service's metrics (no prometheus-client import here).

prometheus-client picks its value store when it is first imported, from
``PROMETHEUS_MULTIPROC_DIR``; ``bastion service run`` therefore prepares the
directory and sets the variable through this module before anything imports
:mod:`bastion.service.metrics`.
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["METRICS_DIR_NAME", "MULTIPROC_ENV", "prepare_multiprocess_dir"]

#: The environment variable prometheus-client's multiprocess mode reads.
MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: The directory under the data directory that holds the workers' metric files.
METRICS_DIR_NAME = "metrics"


def prepare_multiprocess_dir(home: Path) -> Path:
    """Create (0700) and empty ``<home>/metrics``; call before workers start.

    Files of a previous run would add its counts to this one's.
    """
    path = home / METRICS_DIR_NAME
    path.mkdir(mode=0o700, exist_ok=True)
    for entry in path.iterdir():
        if entry.suffix == ".db" and entry.is_file():
            entry.unlink()
    return path
