"""A scripted OS entry point for the A/B process tests.

``test_ab_process.py`` copies this file into a test OS image as
``bastion/os/__main__.py``, so ``bastion device run`` boots it like the real OS
(from a verified, measured slot, with the monitor on the other end of the
socketpair). At each boot it appends what the monitor reports to
``STATE/boots.jsonl``, then runs the actions listed for this boot number in
``STATE/plan.json`` (``{"boots": [[action, ...], ...]}``):

``["install", NAME]``  monitor ``install_os`` of ``STATE/staging/NAME``
``["confirm"]``        monitor ``confirm_boot``
``["ack"]``            monitor ``ack_boot_event``
``["mark", NAME]``     create ``STATE/NAME`` (the test waits for it, then cuts the power)
``["hang"]``           sleep until killed
``["exit", N]``        exit with status N (default after the last action: 0)

Monitor answers and refusals are appended to ``STATE/ops.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any

from bastion.monitor.client import MonitorClient
from bastion.monitor.errors import MonitorRefusedError


def _append(path: Path, record: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(record, sort_keys=True) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--monitor-fd", type=int, required=True)
    parser.add_argument("--state-dir", type=Path, required=True)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--app-store", type=Path)
    parser.add_argument("--boot-config", type=Path)
    parser.add_argument("--os-image", type=Path)
    parser.add_argument("--periph-dir", type=Path)
    parser.add_argument("--once", action="store_true")
    args = parser.parse_args()
    state: Path = args.state_dir
    monitor = MonitorClient(socket.socket(fileno=args.monitor_fd))
    boot = monitor.read_counters()
    log = state / "boots.jsonl"
    index = len(log.read_text().splitlines()) if log.exists() else 0
    _append(
        log,
        {
            "version": boot.os_version,
            "slot": boot.boot_slot,
            "trial": boot.trial,
            "counters": boot.rollback_counters,
            "last_event": None if boot.last_event is None else boot.last_event.to_json(),
        },
    )
    plan_path = state / "plan.json"
    boots = json.loads(plan_path.read_text())["boots"] if plan_path.exists() else []
    for action in boots[index] if index < len(boots) else []:
        name = action[0]
        try:
            if name == "install":
                done = monitor.install_os(str(state / "staging" / action[1]))
                _append(state / "ops.jsonl", {"boot": index, "install": done.slot, "version": done.version})
            elif name == "confirm":
                confirmed = monitor.confirm_boot()
                _append(state / "ops.jsonl", {"boot": index, "confirm": confirmed.active_slot})
            elif name == "ack":
                monitor.ack_boot_event()
            elif name == "mark":
                (state / action[1]).write_text("1")
            elif name == "hang":
                while True:
                    time.sleep(1)
            elif name == "exit":
                return int(action[1])
        except MonitorRefusedError as exc:
            _append(state / "ops.jsonl", {"boot": index, "op": name, "refused": exc.code})
    return 0


if __name__ == "__main__":
    sys.exit(main())
