#!/usr/bin/env bash
# A two-node Ray cluster on this one machine (docs/deployment.md "Ray workers"): `node_a` (the
# head) and `node_b`, each its own `ray start --block` with CPUS_PER_NODE CPUs, no GPU, a small
# object store and a custom resource named after it. `start` prints the address for
# `wanforge workers --ray`; `stop` stops both nodes (and only them: not every Ray process of this
# user, as `ray stop` would).
#   ADDRESS=$(scripts/ray-local-cluster.sh start /tmp/wanforge-ray)   ...   scripts/ray-local-cluster.sh stop /tmp/wanforge-ray
# Environment: RAY (the ray command; default: ray on PATH), CPUS_PER_NODE (1).
set -euo pipefail
cmd=${1:?start|stop}
dir=${2:?directory}
ray_cmd=${RAY:-ray}
cpus=${CPUS_PER_NODE:-1}
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# each node its own ports: two nodes share this host's
node_ports() {
  echo --node-manager-port="$(free_port)" --object-manager-port="$(free_port)" \
    --metrics-export-port="$(free_port)" --dashboard-agent-listen-port="$(free_port)" \
    --dashboard-agent-grpc-port="$(free_port)" --runtime-env-agent-port="$(free_port)"
}

start_node() {  # NAME ARGS...: one `ray start --block` in its own session, waited for
  local name=$1
  shift
  : >"$dir/$name.log"  # a log left by an earlier start must not say this one is up
  # shellcheck disable=SC2046
  RAY_USAGE_STATS_ENABLED=0 setsid "$ray_cmd" start --block --node-ip-address=127.0.0.1 \
    --num-cpus="$cpus" --num-gpus=0 --resources="{\"$name\": 4}" \
    --object-store-memory=$((80 * 1024 * 1024)) --disable-usage-stats $(node_ports) "$@" \
    >"$dir/$name.log" 2>&1 </dev/null &
  echo $! >"$dir/$name.pid"
  for _ in $(seq 600); do
    grep -qs "block forever" "$dir/$name.log" && return 0
    kill -0 "$(cat "$dir/$name.pid")" 2>/dev/null || break
    sleep 0.1
  done
  echo "ray node $name did not start (see $dir/$name.log)" >&2
  return 1
}

stop_node() {
  local pidfile="$dir/$1.pid" pid
  [ -f "$pidfile" ] || return 0
  pid=$(cat "$pidfile")
  kill -TERM "$pid" 2>/dev/null || true  # Ray drains the node and stops its processes
  for _ in $(seq 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL -- "-$pid" 2>/dev/null || true  # whatever is left of its session
  rm -f "$pidfile"
}

case "$cmd" in
  start)
    mkdir -p "$dir"
    port=$(free_port)
    trap 'stop_node node_b; stop_node node_a' ERR
    start_node node_a --head --port="$port" --include-dashboard=false \
      --dashboard-port="$(free_port)" --temp-dir="$dir/ray"
    start_node node_b --address="127.0.0.1:$port"
    echo "127.0.0.1:$port" | tee "$dir/address"
    ;;
  stop)
    stop_node node_b
    stop_node node_a
    ;;
  *)
    echo "usage: $0 start|stop DIR" >&2
    exit 2
    ;;
esac
