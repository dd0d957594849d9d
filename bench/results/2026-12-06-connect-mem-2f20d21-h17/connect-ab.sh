#!/usr/bin/env bash
# connect-ab.sh — A/B of authenticated connect rate and idle RSS per connection,
# store on and --no-store, alternating A and B in each round.
#   connect-ab.sh A_BIN B_BIN TOOL OUT ROUNDS [CONNS_ROOMS]
set -euo pipefail
a=$1 b=$2 tool=$3 out=$4 rounds=$5 rooms=${6:-1990}
secret=bench-secret-0123456789abcdef0123456789
mkdir -p "$out"
port=$(( 40000 + RANDOM % 2000 ))
for round in $(seq 1 "$rounds"); do
  for mode in store nostore; do
    for side in a b; do
      bin=${!side}
      port=$((port + 1))
      data=$(mktemp -d)
      extra=""; [ "$mode" = nostore ] && extra="--no-store"
      name="$side-$round-$mode-idle$((rooms * 10))"
      scmd="taskset -c 0 nice -n -20 $bin serve --listen 127.0.0.1:$port --shards 1 --no-pin --jwt-secret $secret --data-dir $data --log-level warn --set limits.handshakes_pending_max=16384 --set net.backlog=4096 $extra"
      $scmd > "$out/server-$name.log" 2>&1 &
      spid=$!
      for _ in $(seq 1 100); do
        (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.05
      done
      sleep 0.3
      rss0=$(awk '/VmRSS/{print $2}' /proc/$spid/status)
      tcmd="taskset -c 1 chrt -f 1 $tool connect --url ws://127.0.0.1:$port --jwt-secret $secret --rooms $rooms --members 10 --duration 1 --server-pid $spid --json --out $out --name $name"
      echo "# $side round $round $mode: $scmd" >> "$out/commands.txt"
      echo "$tcmd" >> "$out/commands.txt"
      json=$($tcmd 2>"$out/tool-$name.err" | tail -1)
      rss_open=$(awk '/VmRSS/{print $2}' /proc/$spid/status)
      sleep 1
      rss1=$(awk '/VmRSS/{print $2}' /proc/$spid/status)
      cpu=$(for t in /proc/$spid/task/*; do echo "$(cat $t/comm | tr ' ' _) $(awk '{print $14+$15}' $t/stat)"; done | awk '{a[$1]+=$2} END {for (k in a) printf "%s=%d,", k, a[k]}')
      sleep 2
      rss5=$(awk '/VmRSS/{print $2}' /proc/$spid/status)
      kill -TERM $spid; wait $spid 2>/dev/null || true
      rm -rf "$data"
      python3 - "$json" "$side" "$round" "$mode" "$rss0" "$rss1" "$rss5" "$rss_open" "$cpu" >> "$out/results.jsonl" <<'PY'
import json, sys
r = json.loads(sys.argv[1])
r.update(side=sys.argv[2], round=int(sys.argv[3]), mode=sys.argv[4], rss_start_kib=int(sys.argv[5]),
         rss_after_close_1s_kib=int(sys.argv[6]), rss_after_close_3s_kib=int(sys.argv[7]), rss_tool_exit_kib=int(sys.argv[8]),
         server_cpu_ticks={k: int(v) for k, v in (kv.split("=") for kv in sys.argv[9].strip(",").split(",") if kv)})
print(json.dumps(r))
PY
      tail -1 "$out/results.jsonl" | python3 -c 'import json,sys; r=json.loads(sys.stdin.read()); print(r["side"],r["round"],r["mode"],r["connected"],round(r["connects_per_sec"]),r["server_rss_per_conn_bytes"],r["rss_start_kib"],r["rss_after_close_1s_kib"],r["rss_after_close_3s_kib"],r["connect_failures"],r["server_cpu_ticks"])' >&2
    done
  done
done
