"""The connection broker: the OS connects, binds and does mutual TLS for apps.

An app's sandbox has no route out. It asks the OS (``net.*`` applibs ops,
:mod:`bastion.os.appservices.network`); the OS checks the manifest
(:mod:`~bastion.os.netbroker.rules`), resolves and connects itself
(:mod:`~bastion.os.netbroker.broker`), and passes the connected socket back by
SCM_RIGHTS. For ``DeviceAuthentication`` it runs the TLS client with the device
key and pumps plaintext to the app (:mod:`~bastion.os.netbroker.tunnel`).
docs/adr/0007-connection-broker.md explains why.
"""
