#!/bin/sh
# `make install`'s recipe: lays out an installed hmacunlock under $DESTDIR (docs/install.md, "What it installs").
# The Makefile passes every variable; run it through `make install PREFIX=... DESTDIR=...`, not by hand.
set -eu
: "${SRC:?}" "${BUILD:?}" "${PREFIX:?}" "${BINDIR:?}" "${LIBDIR:?}" "${PAMDIR:?}" "${UNITDIR:?}" "${MANDIR:?}"
: "${COMPLETIONDIR:?}" "${PAMCONFIGDIR:?}" "${SYSCONFDIR:?}" "${STOREDIR:?}" "${RUNDIR:?}" "${SYSTEM_PYTHON:?}"
D=${DESTDIR:-}
umask 022
say() { echo "install: $*"; }

# 1. The helper's Python environment: a venv on Debian's interpreter (python-fido2 >= 2 is not in Debian 12), with
#    hmacunlock and its dependencies from the source tree and PyPI, and nothing that names the build directory.
say "Python environment $LIBDIR (on $SYSTEM_PYTHON)"
rm -rf "$D$LIBDIR"
"$SYSTEM_PYTHON" -m venv "$D$LIBDIR"
VPY="$D$LIBDIR/bin/python"
"$VPY" -m pip install -q --no-compile --no-warn-script-location --disable-pip-version-check "$SRC"
"$VPY" -m pip uninstall -q -y pip setuptools
find "$D$LIBDIR/bin" -mindepth 1 ! -name 'python*' -exec rm -f {} +
find "$D$LIBDIR" -name direct_url.json -path '*.dist-info/*' -exec rm -f {} +
sed -i '/^command = /d' "$D$LIBDIR/pyvenv.cfg"
SITE=$("$VPY" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
cat > "$SITE/_hmacunlock_install.py" <<EOF
"""Written by make install: where this installation's parts are (libhmacunlock.config, hmacunlock doctor)."""

CONFIG_FILE = "$SYSCONFDIR/hmacunlock/hmacunlock.conf"
PAM_MODULE = "$PAMDIR/pam_hmacunlock.so"
HELPER_PYTHON = "$LIBDIR/bin/python"
SOCKET = "$RUNDIR/helper.sock"
STORE = "$STOREDIR"
UNIT_DIR = "$UNITDIR"
PAM_CONFIG = "$PAMCONFIGDIR/hmacunlock"
EOF
# Byte-code compiled now, under the installed paths: an unprivileged helper (a screen locker) cannot write any.
if [ -n "$D" ]; then
    "$VPY" -m compileall -q -j 0 -s "$D" -p / "$D$LIBDIR/lib" >/dev/null
else
    "$VPY" -m compileall -q -j 0 "$LIBDIR/lib" >/dev/null
fi

# 2. The command.
say "command $BINDIR/hmacunlock"
install -d "$D$BINDIR"
cat > "$D$BINDIR/hmacunlock" <<EOF
#!$LIBDIR/bin/python -I
"""hmacunlock, as make install installs it: the CLI in $LIBDIR."""
import sys

from hmacunlock_cli.main import main

sys.exit(main())
EOF
chmod 0755 "$D$BINDIR/hmacunlock"

# 3. The PAM module, built for this layout: its helper interpreter is the environment above, its default socket= the
#    socket unit's. Named by its bare name in a PAM service.
say "PAM module $PAMDIR/pam_hmacunlock.so"
rm -f "$BUILD/pam_hmacunlock.so"
make -s -C "$SRC/pam_module" MODULE="$BUILD/pam_hmacunlock.so" HELPER_PYTHON="$LIBDIR/bin/python" \
    DEFAULT_SOCKET="$RUNDIR/helper.sock"
install -D -m 0644 "$BUILD/pam_hmacunlock.so" "$D$PAMDIR/pam_hmacunlock.so"

# 4. The warm helper's units, the pam-auth-update profile (not enabled), the configuration file.
say "systemd units in $UNITDIR, pam-auth-update profile $PAMCONFIGDIR/hmacunlock, $SYSCONFDIR/hmacunlock"
install -d "$D$UNITDIR" "$D$PAMCONFIGDIR" "$D$SYSCONFDIR/hmacunlock"
for unit in hmacunlock-helper.socket hmacunlock-helper.service; do
    sed -e "s|@LIBDIR@|$LIBDIR|g" -e "s|@RUNDIR@|$RUNDIR|g" "$SRC/packaging/$unit.in" > "$D$UNITDIR/$unit"
    chmod 0644 "$D$UNITDIR/$unit"
done
install -m 0644 "$SRC/packaging/pam-config.in" "$D$PAMCONFIGDIR/hmacunlock"
CONF="$D$SYSCONFDIR/hmacunlock/hmacunlock.conf"
if [ -e "$CONF" ]; then
    CONF="$CONF.new"  # the admin's file stays; the new template goes beside it
    say "keeping $SYSCONFDIR/hmacunlock/hmacunlock.conf; the template is hmacunlock.conf.new"
fi
"$VPY" "$SRC/tools/gen_dist.py" conf "$CONF"
chmod 0644 "$CONF"

# 5. The store, with the mode the design asks (root's, 0711). The Debian package leaves it to postinst instead.
if [ -z "${NO_STORE:-}" ]; then
    say "store $STOREDIR"
    install -d -m 0711 "$D$STOREDIR"
fi

# 6. Man pages and bash completion, generated from the parser and the PAM option table.
say "man pages in $MANDIR/man8, bash completion in $COMPLETIONDIR"
"$VPY" "$SRC/tools/gen_dist.py" man "$BUILD/man"
install -d "$D$MANDIR/man8" "$D$COMPLETIONDIR"
for page in hmacunlock.8 pam_hmacunlock.8; do
    gzip -9n < "$BUILD/man/$page" > "$D$MANDIR/man8/$page.gz"
    chmod 0644 "$D$MANDIR/man8/$page.gz"
done
"$VPY" "$SRC/tools/gen_dist.py" completion "$D$COMPLETIONDIR/hmacunlock"
chmod 0644 "$D$COMPLETIONDIR/hmacunlock"
install -D -m 0644 "$SRC/LICENSE" "$D$PREFIX/share/doc/hmacunlock/copyright"
say "done"
