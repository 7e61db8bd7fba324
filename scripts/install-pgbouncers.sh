#!/usr/bin/env bash
# Install the two PgBouncers the test suite runs behind (CI calls this; so can you):
#   * 1.18 from Debian 12 (`apt-get install pgbouncer`): no prepared-statement support in
#     transaction mode, at /usr/sbin/pgbouncer;
#   * 1.24 built from Debian 13's source package (PgBouncer >= 1.21 supports
#     `max_prepared_statements`, as Neon's pooler does), into PREFIX (default /opt/pgbouncer).
# Takes about a minute on 2 cores the first time; idempotent. Needs root (apt-get).
set -euo pipefail
PREFIX=${1:-/opt/pgbouncer}
export DEBIAN_FRONTEND=noninteractive
if [ ! -x /usr/sbin/pgbouncer ]; then
  apt-get install -y -qq pgbouncer >/dev/null
  # The package's own service is not wanted: the tests start their own PgBouncer.
  (systemctl disable --now pgbouncer 2>/dev/null || service pgbouncer stop 2>/dev/null) || true
fi
/usr/sbin/pgbouncer --version | head -1
if [ -x "$PREFIX/bin/pgbouncer" ]; then "$PREFIX/bin/pgbouncer" --version | head -1; exit 0; fi
apt-get install -y -qq libevent-dev libc-ares-dev libssl-dev pkg-config >/dev/null
w=$(mktemp -d); chmod 755 "$w"; trap 'rm -rf "$w"' EXIT
mkdir -p "$w/sources" "$w/lists/partial" "$w/cache/archives/partial"
# A private apt configuration that knows only Debian 13's source index, so the system's is untouched.
printf 'Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
  >"$w/sources/trixie.sources"
apt_opts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$w/sources"
          -o "Dir::State::Lists=$w/lists" -o "Dir::Cache=$w/cache")
apt-get "${apt_opts[@]}" update -qq
cd "$w" && apt-get "${apt_opts[@]}" source --download-only -qq pgbouncer >/dev/null 2>&1
tar xzf pgbouncer_*.orig.tar.gz && cd pgbouncer-1.*
./configure -q --prefix="$PREFIX" --without-systemd --without-pam >/dev/null
make -s -j"$(nproc)" >/dev/null && make -s install >/dev/null
"$PREFIX/bin/pgbouncer" --version | head -1
