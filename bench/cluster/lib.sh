# bench/cluster/lib.sh — sourced by bench/cluster/fanout and bench/cluster/idle:
# a real redis-server on a unix socket in a temp dir, roomcast nodes on
# 127.0.0.1 ports, waits with deadlines, and the counters both scripts read
# (node metrics, Redis INFO, RSS). Every process started here is recorded
# and ended by its PID (TERM, then KILL after 5 s) when the script exits;
# nothing is ended by name.

# PIDs this script started, in start order.
CL_PIDS=()
# The watchdog's PID (cl_watchdog).
CL_WATCHDOG=""

cl_die() {
  echo "$CL_NAME: $*" >&2
  exit 1
}

# cl_stop_pid PID — TERM, up to 5 s to exit, then KILL; reaps it.
cl_stop_pid() {
  local pid=$1
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

# cl_forget PID — drops a reaped PID from CL_PIDS (so that the cleanup never
# signals a number the system may have given to another process since).
cl_forget() {
  local pid keep=()
  for pid in "${CL_PIDS[@]}"; do [ "$pid" = "$1" ] || keep+=("$pid"); done
  CL_PIDS=("${keep[@]}")
}

# cl_stop_all — every recorded process, newest first.
cl_stop_all() {
  local i
  for ((i = ${#CL_PIDS[@]} - 1; i >= 0; i--)); do
    cl_stop_pid "${CL_PIDS[$i]}"
  done
  CL_PIDS=()
  CL_NODE_PIDS=()
  CL_NODE_PORTS=()
}

cl_cleanup() {
  cl_stop_all
  if [ -n "$CL_WATCHDOG" ]; then
    kill -TERM "$CL_WATCHDOG" 2>/dev/null || true
    wait "$CL_WATCHDOG" 2>/dev/null || true
  fi
  if [ -n "${CL_TMP:-}" ]; then
    if [ -n "${CL_KEEP:-}" ]; then echo "$CL_NAME: kept $CL_TMP" >&2; else rm -rf "$CL_TMP"; fi
  fi
  return 0
}

# cl_watchdog SECONDS — the whole script ends (its EXIT trap stopping what
# it started) if it is still running after SECONDS.
cl_watchdog() {
  local limit=$1 me=$$
  (
    for ((i = 0; i < limit; i++)); do sleep 1; done
    echo "$CL_NAME: still running after $limit s (--max-seconds); stopping" >&2
    kill -TERM "$me" 2>/dev/null
  ) &
  CL_WATCHDOG=$!
}

# cl_free_ports N — prints a base port such that base … base+N-1 have no
# listener on 127.0.0.1 (random in 20000–39999, a few tries).
cl_free_ports() {
  local n=$1 base p ok
  for _ in $(seq 1 20); do
    base=$((20000 + RANDOM % 20000))
    ok=1
    for ((p = base; p < base + n; p++)); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then ok=0; break; fi
    done
    [ "$ok" = 1 ] && { echo "$base"; return 0; }
  done
  cl_die "no free port range of $n found"
}

# cl_start_redis DIR CPUS AOF [WRAP…] — redis-server on DIR/redis.sock (no
# TCP port), pinned to CPUS, with the settings tuning.md recommends
# (noeviction, timeout 0, pub/sub output buffer 64mb/16mb/60 s, AOF with
# `appendfsync AOF`, or no persistence with AOF=no). Sets CL_REDIS_SOCK,
# CL_REDIS_PID.
cl_start_redis() {
  local dir=$1 cpus=$2 aof=$3
  shift 3
  local persist=(--appendonly no)
  case "$aof" in
    no) ;;
    everysec|always) persist=(--appendonly yes --appendfsync "$aof") ;;
    *) cl_die "--redis-aof takes everysec, always or no" ;;
  esac
  command -v redis-server >/dev/null || cl_die "redis-server is not installed (Debian: apt-get install redis-server)"
  CL_REDIS_SOCK="$dir/redis.sock"
  local cmd=(taskset -c "$cpus" "$@" redis-server --port 0 --unixsocket "$CL_REDIS_SOCK" --unixsocketperm 700
    --dir "$dir" --logfile "$dir/redis.log" --save "" "${persist[@]}"
    --maxmemory-policy noeviction --timeout 0 --tcp-keepalive 60
    --client-output-buffer-limit "pubsub 64mb 16mb 60" --daemonize no)
  echo "# redis" >> "$CL_CMDS"
  cl_cmdline "${cmd[@]}" >> "$CL_CMDS"
  "${cmd[@]}" > "$dir/redis.out" 2>&1 &
  CL_REDIS_PID=$!
  CL_PIDS+=("$CL_REDIS_PID")
  for _ in $(seq 1 100); do
    if [ "$(redis-cli -s "$CL_REDIS_SOCK" ping 2>/dev/null)" = PONG ]; then return 0; fi
    kill -0 "$CL_REDIS_PID" 2>/dev/null || { cat "$dir/redis.out" "$dir/redis.log" >&2 2>/dev/null; cl_die "redis-server exited"; }
    sleep 0.1
  done
  cl_die "redis-server did not answer PING within 10 s"
}

cl_redis() { redis-cli -s "$CL_REDIS_SOCK" "$@"; }

# The key prefix of the nodes (cluster.key_prefix, default).
CL_PREFIX=roomcast

# cl_owner ROOM — the node id owning ROOM now (its `P:owner:{tenant}/ROOM`
# key, mapped through `P:nodes`), or nothing.
cl_owner() {
  local key n
  key=$(cl_redis --scan --pattern "$CL_PREFIX:owner:*/$1" 2>/dev/null | head -1)
  [ -n "$key" ] || return 0
  n=$(cl_redis GET "$key" 2>/dev/null)
  [ -n "$n" ] && cl_redis HGET "$CL_PREFIX:nodes" "$n" 2>/dev/null
  return 0
}

# cl_cmdline WORDS… — the command as one shell-quoted line (commands.txt).
cl_cmdline() {
  local line
  line=$(printf '%q ' "$@")
  echo "${line% }"
}

# cl_start_node NAME PORT LOG ENV CPUS WRAP -- ARGS… — `roomcast serve` on
# 127.0.0.1:PORT pinned to CPUS (ENV: VAR=VALUE words put before it, or
# ""); waits (20 s) for /readyz 200. Appends its PID to CL_PIDS and
# CL_NODE_PIDS, its port to CL_NODE_PORTS.
CL_NODE_PIDS=()
CL_NODE_PORTS=()
cl_start_node() {
  local name=$1 port=$2 log=$3 env=$4 cpus=$5 wrap=$6
  shift 7
  # shellcheck disable=SC2206 # word splitting of ENV and WRAP is wanted
  local cmd=(taskset -c "$cpus" $wrap "$CL_RC" serve --listen "127.0.0.1:$port" "$@")
  [ -n "$env" ] && cmd=(env $env "${cmd[@]}")
  echo "# node $name" >> "$CL_CMDS"
  # The secret stays out of commands.txt.
  cl_cmdline "${cmd[@]}" | sed 's/ROOMCAST_JWT_SECRET=[^ ]*/ROOMCAST_JWT_SECRET=…/' >> "$CL_CMDS"
  "${cmd[@]}" > "$log" 2>&1 &
  local pid=$!
  CL_PIDS+=("$pid")
  CL_NODE_PIDS+=("$pid")
  CL_NODE_PORTS+=("$port")
  local code
  for _ in $(seq 1 200); do
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 1 "http://127.0.0.1:$port/readyz" 2>/dev/null || true)
    [ "$code" = 200 ] && return 0
    kill -0 "$pid" 2>/dev/null || { tail -20 "$log" >&2; cl_die "node $name exited; see $log"; }
    sleep 0.1
  done
  tail -20 "$log" >&2
  cl_die "node $name: /readyz did not answer 200 within 20 s (last: $code); see $log"
}

# cl_metrics PORT — the node's /metrics text ("" if it does not answer).
cl_metrics() {
  curl -s --max-time 2 "http://127.0.0.1:$1/metrics" 2>/dev/null || true
}

# cl_metric PORT NAME — the sum of NAME's samples (all label sets), or
# nothing when the node does not export it.
cl_metric() {
  cl_metrics "$1" | awk -v n="$2" '
    $1 == n || index($1, n "{") == 1 { s += $2; seen = 1 }
    END { if (seen) printf "%.0f\n", s }'
}

# cl_wait_cluster NODES — every node's roomcast_cluster_link_up is 1 and its
# roomcast_cluster_nodes is at least NODES (20 s); a node that exports
# neither is reported and not waited for.
cl_wait_cluster() {
  local want=$1 port up n
  for port in "${CL_NODE_PORTS[@]}"; do
    for i in $(seq 1 200); do
      up=$(cl_metric "$port" roomcast_cluster_link_up)
      n=$(cl_metric "$port" roomcast_cluster_nodes)
      if [ -z "$up" ] && [ -z "$n" ]; then
        echo "$CL_NAME: warning: node on port $port exports no roomcast_cluster_* metrics" >&2
        break
      fi
      [ "${up:-0}" = 1 ] && [ "${n:-0}" -ge "$want" ] && break
      [ "$i" = 200 ] && cl_die "node on port $port: link_up=${up:-?} nodes=${n:-?} after 20 s (want 1 and $want)"
      sleep 0.1
    done
  done
}

# cl_conns — the nodes' roomcast_connections, space-separated, in start
# order ("x" for a node that did not answer).
cl_conns() {
  local port v out=()
  for port in "${CL_NODE_PORTS[@]}"; do
    v=$(cl_metric "$port" roomcast_connections)
    out+=("${v:-x}")
  done
  echo "${out[*]}"
}

# cl_conns_sum — their sum (nodes that did not answer count 0).
cl_conns_sum() {
  local c sum=0
  for c in $(cl_conns); do [[ $c =~ ^[0-9]+$ ]] && sum=$((sum + c)); done
  echo "$sum"
}

# cl_wait_conns_zero SECONDS — until every node holds no connection (the
# metric is at most ~1 s old); then one more second for what a close sends
# through Redis (presence) to be done. Warns (does not fail) at the deadline.
cl_wait_conns_zero() {
  local limit=$1 c
  for _ in $(seq 1 $((limit * 10))); do
    c=$(cl_conns)
    if [ -z "$(echo "$c" | tr -d ' 0x')" ]; then sleep 1; return 0; fi
    sleep 0.1
  done
  echo "$CL_NAME: warning: nodes still hold connections after ${limit} s: $c" >&2
}

cl_rss_kib() { awk '/^VmRSS/{print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }

# cl_snapshot FILE — Redis INFO commandstats + stats + memory, to FILE.
cl_snapshot() {
  { cl_redis INFO commandstats; cl_redis INFO stats; cl_redis INFO memory; } > "$1" 2>/dev/null || true
}

# cl_machine — the machine section of a summary.
cl_machine() {
  echo "- cores: $(nproc) ($(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1))"
  echo "- kernel: $(uname -r)"
  echo "- memory: $(free -g | awk '/Mem:/{print $2" GiB"}')"
  echo "- open files per process: $(ulimit -n) (hard $(ulimit -Hn)); somaxconn $(cat /proc/sys/net/core/somaxconn); port range $(tr '\t' '-' < /proc/sys/net/ipv4/ip_local_port_range)"
  echo "- redis-server: $(redis-server --version 2>/dev/null | head -1)"
}
