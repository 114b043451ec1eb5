"""The device OS runtime, first version: attestation client, state and scheduler.

It runs as its own process (``python -m bastion.os``) from the unpacked OS image,
talks to the security monitor through :mod:`bastion.monitor.client`, and to the
Security Service over HTTP(S). See :mod:`bastion.os.runtime` for its argv.
Later issues add the update agent, app manager and error reporter as jobs of
:class:`bastion.os.scheduler.Scheduler`.
"""
