"""The software security key: a CTAP 2.1 authenticator (resident keys, client PIN, hmac-secret, several accounts
per RP) with its persistent state, a presence policy and two transports (in process; CTAPHID over UDP).

It never imports the rest of libhmacunlock: it is the other side of the wire. See docs/internals.md.
"""
