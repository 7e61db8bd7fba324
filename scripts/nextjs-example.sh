#!/usr/bin/env bash
# CI: the Next.js example (examples/nextjs-chat) in a real browser against the API.
#
# Starts a throwaway PostgreSQL cluster, the API from $API_BIN on it (default target/debug/api,
# which CI has built), then in examples/nextjs-chat: npm ci, the codegen check (the committed
# typed documents must be what schema.graphql generates), next build (type-checks the app),
# npm start, and e2e/browser.mjs (Debian's Chromium driven by playwright-core; it checks the
# rows with psql); then the same app under `next dev` with e2e/dev-warnings.mjs, which fails on
# any console warning (graphcache's and React's checks exist only in development builds).
# Prints where the screenshots are and how long it took. Fails loudly; never skips. Everything
# it starts is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
app_dir=$root/examples/nextjs-chat
start=$(date +%s)
step() { printf '\n== nextjs-example: %s (%ss)\n' "$*" "$(( $(date +%s) - start ))"; }

API_BIN=${API_BIN:-$root/target/debug/api}
[ -x "$API_BIN" ] || { echo "API_BIN=$API_BIN is not an executable: build it first (cargo build -p api)"; exit 1; }

step "tools: Debian's chromium, psql, node"
need_apt=()
[ -x /usr/bin/chromium ] || need_apt+=(chromium)
command -v psql >/dev/null || need_apt+=(postgresql-client)
command -v node >/dev/null || need_apt+=(nodejs npm)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need_apt+=(postgresql)
if [ ${#need_apt[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi
echo "chromium $(dpkg-query -W -f='${Version}' chromium)"
node --version
pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

free_port() {
  node -e 'const s = require("net").createServer().listen(0, "127.0.0.1", () => { console.log(s.address().port); s.close(); })'
}

work=$(mktemp -d)
chown postgres: "$work"
api_pid=
app_pid=
pg_started=
# Stop what this script started, by pid (never `kill 0`): the app and its children as a
# process group (setsid made it a group leader), the API, then the cluster.
cleanup() {
  status=$?
  if [ -n "$app_pid" ]; then kill -TERM -- "-$app_pid" 2>/dev/null || true; wait "$app_pid" 2>/dev/null || true; fi
  if [ -n "$api_pid" ]; then kill -TERM "$api_pid" 2>/dev/null || true; wait "$api_pid" 2>/dev/null || true; fi
  if [ -n "$pg_started" ]; then runuser -u postgres -- "$pg_bin/pg_ctl" -D "$work/data" -m fast -w stop >/dev/null || true; fi
  if [ "$status" != 0 ]; then
    [ -d "$app_dir/e2e/screenshots" ] && echo "screenshots so far: $app_dir/e2e/screenshots"
    for log in api.log app.log pg.log; do
      [ -f "$work/$log" ] && { echo "--- $log (last 40 lines)"; tail -40 "$work/$log"; }
    done
  fi
  rm -rf "$work"
}
trap cleanup EXIT

step "a throwaway PostgreSQL cluster ($pg_bin)"
pg_port=$(free_port)
runuser -u postgres -- "$pg_bin/initdb" -D "$work/data" -U postgres --auth=trust -E UTF8 --no-instructions >/dev/null
runuser -u postgres -- "$pg_bin/pg_ctl" -D "$work/data" -l "$work/pg.log" -w \
  -o "-p $pg_port -k $work -c listen_addresses=127.0.0.1" start >/dev/null
pg_started=1
psql "postgres://postgres@127.0.0.1:$pg_port/postgres" -XAtqc 'CREATE DATABASE app'
database_url="postgres://postgres@127.0.0.1:$pg_port/app"
echo "PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}') on port $pg_port"

# One secret for both: the API verifies the cookies Better Auth signs. Ports are free ones; the
# app's origin is trusted by the API (credentialed CORS, WebSocket Origin).
secret=$(head -c 32 /dev/urandom | base64)
api_port=$(free_port)
app_port=$(free_port)
app_url="http://localhost:$app_port"
graphql_url="http://localhost:$api_port/graphql"

step "the API ($API_BIN) on port $api_port, trusting $app_url"
( cd "$work" && exec env -u OPENAI_BASE_URL -u OPENAI_API_KEY -u DATABASE_URL_DIRECT \
    DATABASE_URL="$database_url" HOST=127.0.0.1 PORT="$api_port" TRUSTED_ORIGINS="$app_url" \
    BETTER_AUTH_SECRET="$secret" "$API_BIN" ) >"$work/api.log" 2>&1 &
api_pid=$!
for i in $(seq 1 150); do
  curl -fsS "http://127.0.0.1:$api_port/readyz" >/dev/null 2>&1 && break
  kill -0 "$api_pid" 2>/dev/null || { echo "the API exited"; exit 1; }
  [ "$i" = 150 ] && { echo "the API was not ready in 30 s"; exit 1; }
  sleep 0.2
done
curl -fsS "http://127.0.0.1:$api_port/readyz"; echo

cd "$app_dir"
export NEXT_TELEMETRY_DISABLED=1
export DATABASE_URL=$database_url BETTER_AUTH_SECRET=$secret BETTER_AUTH_URL=$app_url
# Inlined into the browser bundle at build time.
export NEXT_PUBLIC_GRAPHQL_URL=$graphql_url

step "npm ci (examples/nextjs-chat)"
npm ci --no-audit --no-fund --loglevel=error

step "codegen: the committed typed documents are what schema.graphql generates"
npm run --silent codegen
changed=$(git status --porcelain -- src/gql)
if [ -n "$changed" ]; then
  echo "$changed"
  git --no-pager diff --stat -- src/gql
  echo "src/gql is out of date with schema.graphql: run 'npm run codegen' in examples/nextjs-chat and commit it"
  exit 1
fi
echo "src/gql is up to date"

step "next build (type-checks the app against the generated types)"
npm run --silent build

step "npm start on port $app_port"
wait_for_app() {
  for i in $(seq 1 300); do
    curl -fsS -o /dev/null "http://127.0.0.1:$app_port/sign-in" 2>/dev/null && return 0
    kill -0 "$app_pid" 2>/dev/null || { echo "the app exited"; exit 1; }
    [ "$i" = 300 ] && { echo "the app did not answer in 60 s"; exit 1; }
    sleep 0.2
  done
}
setsid npm start -- -H 127.0.0.1 -p "$app_port" >"$work/app.log" 2>&1 &
app_pid=$!
wait_for_app

step "the browser test: e2e/browser.mjs (Chromium $(dpkg-query -W -f='${Version}' chromium), playwright-core $(node -p 'require("playwright-core/package.json").version'))"
screenshots=$app_dir/e2e/screenshots
APP_URL=$app_url SCREENSHOTS_DIR=$screenshots node e2e/browser.mjs

step "next dev: the same app where React and graphcache report mistakes; e2e/dev-warnings.mjs fails on any console warning"
kill -TERM -- "-$app_pid"; wait "$app_pid" || true
setsid npm run dev -- -H 127.0.0.1 -p "$app_port" >"$work/app.log" 2>&1 &
app_pid=$!
wait_for_app
APP_URL=$app_url SCREENSHOTS_DIR=$screenshots/dev-mode node e2e/dev-warnings.mjs

step "done"
echo "screenshots: $screenshots ($(find "$screenshots" -name '*.png' | wc -l) files)"
echo "examples/nextjs-chat took $(( $(date +%s) - start )) s (npm ci, codegen check, next build, browser test on npm start, console check on next dev)"
