#!/usr/bin/env bash
# Install Docker Compose v2 (Debian 13's docker-compose package: the Go reference
# implementation, whose `config` validates a compose file against the compose specification
# without a Docker engine) as /usr/local/bin/docker-compose. CI uses it to validate
# docker-compose.yml; no engine runs on the CI machines. Idempotent. Needs root.
set -euo pipefail
if [ -x /usr/local/bin/docker-compose ]; then /usr/local/bin/docker-compose version; exit 0; fi
w=$(mktemp -d); chmod 755 "$w"; trap 'rm -rf "$w"' EXIT
mkdir -p "$w/sources" "$w/lists/partial" "$w/cache/archives/partial"
printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: trixie\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' \
  >"$w/sources/trixie.sources"
apt_opts=(-o Dir::Etc::SourceList=/dev/null -o "Dir::Etc::SourceParts=$w/sources"
          -o "Dir::State::Lists=$w/lists" -o "Dir::Cache=$w/cache")
apt-get "${apt_opts[@]}" update -qq 2>/dev/null
# Only the .deb is fetched and unpacked: its dependencies are for the docker CLI plugin use.
( cd "$w" && apt-get "${apt_opts[@]}" download -qq docker-compose 2>/dev/null )
dpkg-deb -x "$w"/docker-compose_*.deb "$w/root"
install -m 755 "$w/root/usr/libexec/docker/cli-plugins/docker-compose" /usr/local/bin/docker-compose
/usr/local/bin/docker-compose version
