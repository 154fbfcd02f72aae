"""The sign-in benchmark: hmacunlock's PAM module next to pam-u2f on the same software key (docs/benchmark.md)."""
