"""The OS side of applibs: every request an app makes passes one choke point.

:mod:`~bastion.os.appservices.registry` holds the types (an operation names the
manifest capability it needs); :mod:`~bastion.os.appservices.table` is the one
table of operations; :mod:`~bastion.os.appservices.server` serves an app's
socket and checks each request against the table before any handler runs.
"""
