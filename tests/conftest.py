"""Shared fixtures live in one plugin module per area, so that each area owns its own file."""

pytest_plugins = [
    "tests.fixtures.softkey",  # in-process software key: softkey_state, softkey_device, ...
    "tests.fixtures.udp",  # the software key served over CTAPHID/UDP: udp_softkey, ...
    "tests.fixtures.library",  # store dirs, enrolled users
    "tests.fixtures.system",  # root / loop device / Debian package guards
    "tests.fixtures.luks",  # LUKS2 volumes in files: volume, make_volume, dump, cryptsetup_accepts
    "tests.fixtures.pam_signin",  # sign-in through libpam: served_key, enrolled, line
    "tests.fixtures.warm",  # the warm helper daemon: sockdir, daemon
]
