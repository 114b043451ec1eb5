"""The security monitor: the small TCB that holds the Alias key for one boot.

It runs as its own process (``python -m bastion.monitor``) and answers a tiny
request/response API over a socketpair (see ``docs/monitor-api.md``). The OS
talks to it only through :class:`bastion.monitor.client.MonitorClient`.

Import the submodules directly (``bastion.monitor.client``, ``.server``,
``.identity``); this package imports nothing at load time so the OS pulls in
only the client side.
"""
