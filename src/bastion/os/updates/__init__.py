"""The device's update agent (docs/updates.md, "Device: the update agent").

- :mod:`~bastion.os.updates.pointer`: the group pointer from attestation, first root per group;
- :mod:`~bastion.os.updates.fetcher`: ngclient's network, with ETag caching of the polled files;
- :mod:`~bastion.os.updates.tuf_client`: ngclient for one group, bounded, errors translated;
- :mod:`~bastion.os.updates.policy`: maintenance window and app deferral (capped at 24 h);
- :mod:`~bastion.os.updates.app_update`, :mod:`~bastion.os.updates.os_update`: install steps;
- :mod:`~bastion.os.updates.agent`: the check, boot-time rollback report and trial confirmation;
- :mod:`~bastion.os.updates.events`, :mod:`~bastion.os.updates.reporter`: the event queue and
  signed status reports;
- :mod:`~bastion.os.updates.control`: the control socket;
- :mod:`~bastion.os.updates.system`: wires it all into the OS runtime.

Imports nothing at package import time (the attestation client imports the pointer module).
"""
