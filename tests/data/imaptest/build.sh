#!/bin/sh
# Builds Dovecot's imaptest (the IMAP compliance and stress tester Dovecot, mox and Stalwart
# test against) from the source tarball beside this script, against Debian's Dovecot
# development package, and prints the path of the binary last.
#
#   usage: build.sh            (cache: $MSS_IMAPTEST_CACHE, default ~/.cache/mss/imaptest)
#
# imaptest-924f619.tar.gz is imaptest commit 924f619 (2022-03-09, MIT licence, COPYING.MIT in
# the tarball), the last one that builds against Dovecot 2.3; later commits need Dovecot 2.4's
# SSL API. It links against libdovecot from `dovecot-dev` / `dovecot-core` (Debian 12: 2.3.19.1),
# so only imaptest itself is compiled: under a minute on 2 cores, then cached under a key made
# of this script, the tarball and the dovecot-dev version (a change to any of them rebuilds).
# The packages it needs are in scripts/apt-packages.txt (`make system-deps` installs them).
#
# Run the binary:  imaptest host=127.0.0.1 port=PORT ssl=any-cert user=U pass=P test=DIR/tests
#   (scripted tests over implicit TLS; DIR is the printed binary's directory)
#                  imaptest ... mbox=FILE secs=30 clients=10     (stress mode)
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
TARBALL=$HERE/imaptest-924f619.tar.gz
CACHE=${MSS_IMAPTEST_CACHE:-$HOME/.cache/mss/imaptest}
DOVECOT_CONFIG=/usr/lib/dovecot/dovecot-config   # shipped by Debian's dovecot-dev

fail() { echo "imaptest build: $*" >&2; exit 1; }
[ -f "$DOVECOT_CONFIG" ] || fail "$DOVECOT_CONFIG is missing: install the Debian package dovecot-dev (make system-deps)"
for tool in autoconf automake libtoolize make cc; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool is missing: install scripts/apt-packages.txt (make system-deps)"
done
version=$(dpkg-query -W -f='${Version}' dovecot-dev 2>/dev/null || echo unknown)
key=$( (cat "$0" "$TARBALL"; echo "$version") | sha256sum | cut -c1-16)
OUT=$CACHE/$key
BIN=$OUT/imaptest
if [ -x "$BIN" ] && [ -d "$OUT/tests" ]; then echo "$BIN"; exit 0; fi

mkdir -p "$CACHE"
# One build at a time (two test sessions may start together); the second one finds the result.
exec 9>"$CACHE/.lock"
flock 9
if [ -x "$BIN" ] && [ -d "$OUT/tests" ]; then echo "$BIN"; exit 0; fi

WORK=$(mktemp -d "$CACHE/build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
tar xzf "$TARBALL" -C "$WORK"
cd "$WORK"
echo "0.0.0-924f619" > version   # what git-version-gen would have read from the git checkout

# Debian's security update of Dovecot 2.3.19.1 (CVE-2024-23185, in 2.3.19.1+dfsg1-2.1+deb12u1)
# gave imap_parser_create() a fourth argument, `params`; NULL keeps the old defaults. Adapt
# imaptest's three calls when the installed header has it (the upstream 2.3.19.1 one does not).
if grep -q 'const struct imap_parser_params \*params' /usr/include/dovecot/imap-parser.h 2>/dev/null; then
  sed -i 's/imap_parser_create(\(.*\), (size_t)-1)/imap_parser_create(\1, (size_t)-1, NULL)/' \
    src/commands.c src/imap-client.c src/test-parser.c
fi

log=$WORK/build.log
{
  nice ./autogen.sh &&
  nice ./configure -q --with-dovecot=/usr/lib/dovecot LDFLAGS="-Wl,-rpath,/usr/lib/dovecot" &&
  nice make -s -j2
} >"$log" 2>&1 || { tail -40 "$log" >&2; fail "compilation failed (log above)"; }

# Keep only what is run: the binary and its scripted tests; install atomically.
STAGE=$CACHE/stage.$key.$$
rm -rf "$STAGE" && mkdir -p "$STAGE"
cp src/imaptest "$STAGE/imaptest"
cp -r src/tests "$STAGE/tests"
cp COPYING COPYING.MIT "$STAGE/"
rm -rf "$OUT" && mv "$STAGE" "$OUT"
echo "$BIN"
