"""Pure cryptography for Bastion: keys, DICE derivations, COSE_Sign1, EAT and X.509.

Nothing in this package does I/O. Every function takes bytes (and a clock value
where time matters) and returns typed objects or raises a
:class:`bastion.crypto.errors.CryptoError`.
"""
