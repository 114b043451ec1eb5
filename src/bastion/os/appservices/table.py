"""The one table of applibs operations (the choke point's contents).

Every area module contributes its ``OPERATIONS``; a request whose op is not in
:data:`OPERATIONS` is refused and recorded. Add an area by importing its tuple
here, nowhere else.
"""

from __future__ import annotations

from bastion.os.appservices import application as application_ops
from bastion.os.appservices import certstore as certstore_ops
from bastion.os.appservices import channel as channel_ops
from bastion.os.appservices import core, network, peripherals, sandbox_ops
from bastion.os.appservices import power as power_ops
from bastion.os.appservices import rtc as rtc_ops
from bastion.os.appservices import storage as storage_ops
from bastion.os.appservices import sysevent as sysevent_ops
from bastion.os.appservices import watchdog as watchdog_ops
from bastion.os.appservices.registry import Operation

__all__ = ["OPERATIONS", "build_table"]


def build_table(*groups: tuple[Operation, ...]) -> dict[str, Operation]:
    """Join operation groups into a table.

    Raises:
        ValueError: two operations share a name (a programming error).
    """
    table: dict[str, Operation] = {}
    for group in groups:
        for operation in group:
            if operation.name in table:
                raise ValueError(f"applibs operation {operation.name} is defined twice")
            table[operation.name] = operation
    return table


OPERATIONS: dict[str, Operation] = build_table(
    core.OPERATIONS,
    network.OPERATIONS,
    sandbox_ops.OPERATIONS,
    storage_ops.OPERATIONS,
    channel_ops.OPERATIONS,
    application_ops.OPERATIONS,
    sysevent_ops.OPERATIONS,
    power_ops.OPERATIONS,
    rtc_ops.OPERATIONS,
    certstore_ops.OPERATIONS,
    watchdog_ops.OPERATIONS,
    peripherals.OPERATIONS,
)
