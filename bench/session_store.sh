#!/usr/bin/env bash
# The Redis session store against the cookie store (issue 12), with bench/run's load method:
# server pinned to core 0, wrk pinned to core 1 (1 thread, 50 keep-alive connections), a
# warm-up, then DURATION s measured, the rows alternating, ROUNDS times. Besides requests/s it
# prints the server's CPU time per request (utime + stime from /proc over the measured run),
# which a busy machine disturbs much less, and the Redis calls made during the load (the
# subscription's health checks left out): 0 on a warm cache.
#
#     bench/session_store.sh            # ROUNDS=3 DURATION=10 WARMUP=2
#
# It signs alice in first (`BENCH_PREPARE_INTO` of bench/run: builds bench_server, starts the
# provider), then uses that cookie session as is for the cookie rows, and moves it into Redis
# (its first request with session_store = "redis") for the Redis rows. Results: $DIR/results.tsv.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BIN=$ROOT/target/release/examples/bench_server
DIR=${BENCH_SESSION_DIR:-${TMPDIR:-/tmp}/rocket_logto_session_store}
[ -f "$DIR/cookie" ] || BENCH_PREPARE_INTO="$DIR" "$ROOT/bench/run"
DURATION=${DURATION:-10}; WARMUP=${WARMUP:-2}; ROUNDS=${ROUNDS:-3}
cd "$ROOT"
RDP=$("$BIN" free-port); RP=$("$BIN" free-port)
taskset -c 1 redis-server --port "$RDP" --bind 127.0.0.1 --save "" --appendonly no --logfile "" >/dev/null 2>&1 &
RPID=$!
PORT=0 PROVIDER_IGNORE_STDIN=1 REDIRECT_URIS="http://127.0.0.1:$RP/logto/sign-in-callback" node tests/provider/server.mjs </dev/null >$DIR/provider.out 2>$DIR/provider.err &
PPID2=$!
trap 'kill $RPID $PPID2 2>/dev/null; [ -n "${SPID:-}" ] && kill $SPID 2>/dev/null; true' EXIT
for _ in $(seq 300); do ENDPOINT=$(sed -n 's/^LOGTO_TEST_PROVIDER_READY //p' $DIR/provider.out); [ -n "$ENDPOINT" ] && break; sleep 0.1; done
sleep 0.5
COOKIE=$(cat $DIR/cookie)
ROCKET=http://127.0.0.1:$RP
start() { env BENCH_PORT=$RP BENCH_ENDPOINT=$ENDPOINT BENCH_PLAIN_BODY=$DIR/me.json "$@" taskset -c 0 "$BIN" serve >$DIR/server.log 2>&1 & SPID=$!
  for _ in $(seq 200); do curl -sf -o /dev/null $ROCKET/plain && return 0; sleep 0.05; done; cat $DIR/server.log; exit 1; }
stop() { kill $SPID; wait $SPID 2>/dev/null || true; SPID=; }
printf 'row\tround\trps\tp50_us\tp99_us\n' > $DIR/results.tsv
for round in $(seq $ROUNDS); do
  for spec in "cookie_me|/me|" "cookie_redis_url_me|/me|LOGTO_REDIS_URL=redis://127.0.0.1:$RDP" "redis_store_me|/me|LOGTO_REDIS_URL=redis://127.0.0.1:$RDP LOGTO_SESSION_STORE=redis" \
              "cookie_shopping|/shopping|" "redis_store_shopping|/shopping|LOGTO_REDIS_URL=redis://127.0.0.1:$RDP LOGTO_SESSION_STORE=redis"; do
    IFS='|' read -r row path envs <<<"$spec"
    read -r -a extra <<<"$envs"
    start "${extra[@]}"
    cookie=$COOKIE
    if [[ $row == redis_store* ]]; then
      for _ in $(seq 100); do [ "$(redis-cli -p $RDP pubsub numsub rocket_logto:events | tail -1)" = 1 ] && break; sleep 0.05; done
      # The cookie session is moved into Redis at its first request: its new id cookie.
      sid=$(curl -s -D - -o /dev/null -H "Cookie: $COOKIE" -H 'Accept: application/json' $ROCKET$path | sed -n 's/^[Ss]et-[Cc]ookie: \(logto_sid=[^;]*\).*/\1/p' | tr -d '\r')
      [ -n "$sid" ] || { echo "no sid"; exit 1; }
      cookie=$sid
    fi
    body=$(curl -sf -H "Cookie: $cookie" -H 'Accept: application/json' $ROCKET$path)
    case $body in *sub*|*access_token*) ;; *) echo "$row: $body"; exit 1;; esac
    before=$(redis-cli -p $RDP info commandstats | grep -v 'cmdstat_ping\|cmdstat_info\|cmdstat_subscribe\|cmdstat_client\|cmdstat_hello' | awk -F'calls=' '/cmdstat/ {split($2,a,","); s+=a[1]} END {print s+0}')
    taskset -c 1 wrk -d${WARMUP}s -t1 -c50 -H "Cookie: $cookie" -H 'Accept: application/json' -s bench/wrk_report.lua $ROCKET$path >/dev/null
    t0=$(awk '{print $14+$15}' /proc/$SPID/stat)
    result=$(taskset -c 1 wrk -d${DURATION}s -t1 -c50 -H "Cookie: $cookie" -H 'Accept: application/json' -s bench/wrk_report.lua $ROCKET$path | grep '^WRK_RESULT')
    t1=$(awk '{print $14+$15}' /proc/$SPID/stat)
    after=$(redis-cli -p $RDP info commandstats | grep -v 'cmdstat_ping\|cmdstat_info\|cmdstat_subscribe\|cmdstat_client\|cmdstat_hello' | awk -F'calls=' '/cmdstat/ {split($2,a,","); s+=a[1]} END {print s+0}')
    stop
    declare -A f=(); for kv in ${result#WRK_RESULT }; do f[${kv%%=*}]=${kv#*=}; done
    [ "${f[non2xx]}" = 0 ] || { echo "$row non2xx ${f[non2xx]}"; exit 1; }
    cpu_us=$(awk -v a=$t0 -v b=$t1 -v n=${f[requests]} -v hz=$(getconf CLK_TCK) 'BEGIN { printf "%.1f", (b-a)/hz*1e6/n }')
    echo "round $round $row: server CPU ${cpu_us} us/request; ${f[rps]} req/s p50 ${f[p50_us]} us p99 ${f[p99_us]} us; Redis calls during load: $((after - before)) for ${f[requests]} requests"
    printf '%s\t%s\t%s\t%s\t%s\t%s\n' "$row" "$round" "${f[rps]}" "${f[p50_us]}" "${f[p99_us]}" "$cpu_us" >> $DIR/results.tsv
    unset f
  done
done
# In process, where other processes on the machine disturb the figure least.
cargo build --release --example session_store_micro --features redis >&2
SECRET=$(sed -n '/^const SECRET_KEY/{n;s/^ *"\(.*\)";/\1/p}' examples/bench_server.rs)
SECRET=$SECRET REDIS_URL=redis://127.0.0.1:$RDP COOKIE_FILE=$DIR/cookie \
  taskset -c 0 "$ROOT/target/release/examples/session_store_micro" | grep -v '^logto'
