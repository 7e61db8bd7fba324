#!/usr/bin/env bash
# Run docker-compose.yml's stack without a Docker engine (none runs on the CI machines): the
# same programs with the same configuration, as local processes on loopback ports.
#   * PostgreSQL with the compose file's user, password and database (scram-sha-256);
#   * PgBouncer 1.24 with deploy/pgbouncer/pgbouncer.ini (only host and port rewritten);
#   * the local upstream with the compose file's command;
#   * the API with the compose file's environment (service host names rewritten to loopback),
#     as a non-root user, as the image runs it;
#   * Prometheus (Debian's) with deploy/prometheus/prometheus.yml, its target rewritten to the
#     API's metrics listener, scraping every second.
# Then the compose health check (/readyz) must pass, a user signs up and makes a completion
# through PgBouncer, and the rows are checked over the direct endpoint.
# Needs: target/debug/{api,local-upstream}, PostgreSQL server binaries, PgBouncer 1.24 at
# $PGBOUNCER (default /opt/pgbouncer/bin/pgbouncer, from scripts/install-pgbouncers.sh),
# docker-compose (scripts/install-docker-compose.sh) to read the resolved compose file,
# prometheus and promtool (Debian's prometheus package).
set -euo pipefail
cd "$(dirname "$0")/.."
PGBOUNCER=${PGBOUNCER:-/opt/pgbouncer/bin/pgbouncer}
bin="$PWD/target/debug"
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
w=$(mktemp -d); chmod 755 "$w"
pids=()
cleanup() {
  for ((i=${#pids[@]}-1; i>=0; i--)); do kill -INT "${pids[i]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$w"
}
trap cleanup EXIT
# As root, programs run as the postgres user. setpriv execs in place and a backgrounded simple
# command is exec'd by the shell, so $! is the program itself and cleanup can stop it.
as_pg=()
if [ "$(id -u)" = 0 ]; then as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups --); fi
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
chown postgres "$w" 2>/dev/null || true

docker-compose -f docker-compose.yml config --format json >"$w/compose.json"
read -r pg_user pg_password pg_db < <(python3 -c '
import json,sys; e=json.load(open(sys.argv[1]))["services"]["postgres"]["environment"]
print(e["POSTGRES_USER"], e["POSTGRES_PASSWORD"], e["POSTGRES_DB"])' "$w/compose.json")
pg_port=$(free_port); bouncer_port=$(free_port); upstream_port=$(free_port); api_port=$(free_port)
metrics_port=$(free_port); prom_port=$(free_port)

echo "postgres on $pg_port (user $pg_user, database $pg_db)"
printf '%s\n' "$pg_password" >"$w/pw"; chown postgres "$w/pw" 2>/dev/null || true
"${as_pg[@]}" "$pgbin/initdb" -D "$w/data" -U "$pg_user" --pwfile="$w/pw" --auth=scram-sha-256 \
  --encoding=UTF8 --no-locale --no-sync >/dev/null
"${as_pg[@]}" "$pgbin/postgres" -D "$w/data" -h 127.0.0.1 -p "$pg_port" -k "$w" -c fsync=off >"$w/pg.log" 2>&1 &
pids+=($!)
export PGPASSWORD="$pg_password"
for _ in $(seq 1 100); do "$pgbin/pg_isready" -q -h 127.0.0.1 -p "$pg_port" && break; sleep 0.1; done
psql -q -h 127.0.0.1 -p "$pg_port" -U "$pg_user" -d postgres -c "CREATE DATABASE \"$pg_db\""
# What the image runs from /docker-entrypoint-initdb.d when it creates the cluster: the compose
# file's mounts there, in name order, as the superuser in POSTGRES_DB.
python3 -c '
import json,sys; s=json.load(open(sys.argv[1]))["services"]["postgres"]
for v in sorted(s.get("volumes", []), key=lambda v: v["target"]):
    if v["target"].startswith("/docker-entrypoint-initdb.d/"): print(v["source"])' "$w/compose.json" |
while read -r init; do
  echo "init script: ${init#"$PWD"/}"
  psql -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$pg_port" -U "$pg_user" -d "$pg_db" -f "$init"
done

echo "pgbouncer $("$PGBOUNCER" --version | head -1) on $bouncer_port"
sed -e "s/host=postgres port=5432/host=127.0.0.1 port=$pg_port/" \
    -e "s/^listen_addr = .*/listen_addr = 127.0.0.1/" -e "s/^listen_port = .*/listen_port = $bouncer_port/" \
    -e "s|^auth_file = .*|auth_file = $w/userlist.txt|" deploy/pgbouncer/pgbouncer.ini >"$w/pgbouncer.ini"
cp deploy/pgbouncer/userlist.txt "$w/userlist.txt"
chown postgres "$w/pgbouncer.ini" "$w/userlist.txt" 2>/dev/null || true
"${as_pg[@]}" "$PGBOUNCER" "$w/pgbouncer.ini" >"$w/pgbouncer.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 100); do "$pgbin/pg_isready" -q -h 127.0.0.1 -p "$bouncer_port" -U "$pg_user" -d "$pg_db" && break; sleep 0.1; done
"$pgbin/pg_isready" -h 127.0.0.1 -p "$bouncer_port" -U "$pg_user" -d "$pg_db"

# The upstream's command from the compose file, on a free port.
mapfile -t up_cmd < <(python3 -c '
import json,sys; c=json.load(open(sys.argv[1]))["services"]["upstream"]["command"]
c=[sys.argv[2] if (i>0 and c[i-1]=="--port") else ("127.0.0.1" if (i>0 and c[i-1]=="--host") else a) for i,a in enumerate(c)]
print("\n".join(c))' "$w/compose.json" "$upstream_port")
echo "upstream: ${up_cmd[*]}"
"$bin/${up_cmd[0]}" "${up_cmd[@]:1}" >"$w/upstream.log" 2>&1 &
pids+=($!)

# The API's environment from the compose file, service names rewritten to loopback ports.
python3 - "$w/compose.json" "$pg_port" "$bouncer_port" "$upstream_port" "$api_port" "$metrics_port" >"$w/api.env" <<'PY'
import json, shlex, sys
f, pg, bouncer, upstream, api, metrics = sys.argv[1:]
env = json.load(open(f))["services"]["api"]["environment"]
subs = {"@postgres:5432/": f"@127.0.0.1:{pg}/", "@pgbouncer:6432/": f"@127.0.0.1:{bouncer}/",
        "//upstream:8080/": f"//127.0.0.1:{upstream}/"}
for k, v in env.items():
    for a, b in subs.items():
        v = v.replace(a, b)
    if k == "HOST": v = "127.0.0.1"
    if k == "PORT": v = api
    if k == "BETTER_AUTH_URL": v = f"http://127.0.0.1:{api}"
    if k == "METRICS_ADDR": v = f"127.0.0.1:{metrics}"
    print(f"{k}={shlex.quote(v)}")
PY
sed 's/\(PASSWORD\|SECRET\|URL[A-Z_]*\)=.*/\1=…/' "$w/api.env"
# The image runs the server as an unprivileged user; so does this.
chown postgres "$w/api.env" 2>/dev/null || true
"${as_pg[@]}" bash -c 'set -a; . "$1"; set +a; cd "$2" && exec "$3"' _ "$w/api.env" "$w" "$bin/api" >"$w/api.log" 2>&1 &
pids+=($!)
ok=
for _ in $(seq 1 150); do
  if curl -fsS "http://127.0.0.1:$api_port/readyz" >/dev/null 2>&1; then ok=1; break; fi
  sleep 0.2
done
[ -n "$ok" ] || { cat "$w/api.log" "$w/pgbouncer.log"; echo "the API never became ready"; exit 1; }
curl -fsS "http://127.0.0.1:$api_port/readyz"; echo

gql() { curl -fsS "http://127.0.0.1:$api_port/graphql" -H 'content-type: application/json' ${2:+-H "authorization: Bearer $2"} -d "$1"; }
signup=$(gql '{"query":"mutation { signUp(input: {email: \"compose@example.com\", password: \"correct horse battery staple\", name: \"Compose\"}) { token } }"}')
token=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["data"]["signUp"]["token"])' "$signup")
call=$(gql '{"query":"mutation { complete(input: {prompt: \"hello from compose\"}) { status completionTokens } }"}' "$token")
echo "complete: $call"
python3 -c 'import json,sys; d=json.loads(sys.argv[1])["data"]["complete"]; assert d["status"]=="OK" and d["completionTokens"]>0, d' "$call"
counts=$(psql -At -h 127.0.0.1 -p "$pg_port" -U "$pg_user" -d "$pg_db" -c \
  'SELECT (SELECT count(*) FROM "user"), (SELECT count(*) FROM prompt_logs), (SELECT count(*) FROM token_usage), (SELECT count(*) FROM seaql_migrations)')
echo "rows over the direct endpoint (users|logs|usage|migrations): $counts"
[ "$(cut -d'|' -f1-3 <<<"$counts")" = "1|1|1" ] || { echo "unexpected rows"; exit 1; }
# The request role (DATABASE_URL) has rights to rows only: it cannot rewrite the meter or
# switch its triggers off.
api_db_url=$(sed -n 's/^DATABASE_URL=//p' "$w/api.env" | tr -d "'")
for sql in 'UPDATE token_usage SET prompt_tokens = 0' 'ALTER TABLE token_usage DISABLE TRIGGER ALL'; do
  if out=$(psql -X -At "$api_db_url" -c "$sql" 2>&1); then echo "the request role may: $sql"; exit 1; fi
  grep -Eq 'permission denied|must be owner' <<<"$out" || { echo "$sql: $out"; exit 1; }
  echo "request role refused: $sql ($out)"
done
# Prometheus, as the compose file configures it (the mounted prometheus.yml), scraping the API.
prom_cfg=$(python3 -c '
import json,sys; s=json.load(open(sys.argv[1]))["services"]["prometheus"]
print(next(v["source"] for v in s["volumes"] if v["target"] == "/etc/prometheus/prometheus.yml"))' "$w/compose.json")
promtool check config "$prom_cfg"
sed -e "s/api:9464/127.0.0.1:$metrics_port/" -e "s/scrape_interval: .*/scrape_interval: 1s/" "$prom_cfg" >"$w/prometheus.yml"
chown postgres "$w/prometheus.yml" 2>/dev/null || true
mkdir -p "$w/prom"; chown postgres "$w/prom" 2>/dev/null || true
"${as_pg[@]}" prometheus --config.file="$w/prometheus.yml" --storage.tsdb.path="$w/prom" \
  --web.listen-address="127.0.0.1:$prom_port" >"$w/prometheus.log" 2>&1 &
pids+=($!)
promql() { curl -fsS "http://127.0.0.1:$prom_port/api/v1/query" --data-urlencode "query=$1" |
  python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "")'; }
metered=$(psql -At -h 127.0.0.1 -p "$pg_port" -U "$pg_user" -d "$pg_db" -c 'SELECT sum(prompt_tokens + completion_tokens) FROM token_usage')
scraped=
for _ in $(seq 1 150); do
  scraped=$(promql 'sum(aiwrapper_tokens_total{job="aiwrapper"})' 2>/dev/null || true)
  [ "$scraped" = "$metered" ] && break
  sleep 0.2
done
[ "$scraped" = "$metered" ] || { cat "$w/prometheus.log"; echo "Prometheus scraped tokens=$scraped, token_usage has $metered"; exit 1; }
echo "prometheus $(prometheus --version 2>&1 | head -1 | cut -d' ' -f3): up=$(promql 'up{job="aiwrapper"}'), aiwrapper_tokens_total = $scraped = token_usage's $metered"
# The README's example queries (its promql block) are valid PromQL that Prometheus evaluates.
python3 -c '
import re,sys; b=re.search(r"```promql\n(.*?)```", open("README.md").read(), re.S).group(1)
print("\n".join(l for l in b.splitlines() if l.strip() and not l.startswith("#")))' |
while read -r q; do
  status=$(curl -fsS "http://127.0.0.1:$prom_port/api/v1/query" --data-urlencode "query=$q" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["status"])')
  [ "$status" = success ] || { echo "README query failed: $q"; exit 1; }
  echo "README query evaluates: $q"
done
echo "compose stack (without an engine): ready, signed up, completed through PgBouncer, scraped by Prometheus"
