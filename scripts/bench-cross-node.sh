#!/bin/sh
# One cross-node run of hubbench (docs/BENCHMARKS.md, issue 18): two fresh
# hubd nodes on one backend, clients on node 1, publishes through node 2.
#
#   scripts/bench-cross-node.sh BACKEND REDIS_URL SCENARIO_ARGS...
#
# BACKEND is redis or redis-cluster (HUB_BROKER); REDIS_URL its HUB_REDIS_URL.
# Node 1 runs on core 0, node 2 and hubbench on core 1 (GOMAXPROCS=1 each);
# the Redis processes are left unpinned. Every key of the backend is flushed
# first (use Redis servers of your own). HUBD and HUBBENCH name the binaries
# (default /tmp/bench-hubd, /tmp/bench-hubbench). Take the benchmark lock
# around it: flock /tmp/bench.lock scripts/bench-cross-node.sh ...
set -eu
backend=$1 url=$2
shift 2
hubd=${HUBD:-/tmp/bench-hubd}
hubbench=${HUBBENCH:-/tmp/bench-hubbench}
secret=bench-secret-0123456789abcdef0123
key=bench-key-0123456789
n1=127.0.0.1:18411 n2=127.0.0.1:18412

# Flush the backend (every master of a cluster, or the one server) and
# note the Redis processes, to report their CPU time.
hostport=${url#redis://}
hostport=${hostport%%[/?]*}
servers=$hostport
if [ "$backend" = redis-cluster ]; then
	servers=$(redis-cli -h "${hostport%:*}" -p "${hostport#*:}" cluster nodes | awk '/master/ { split($2, a, "@"); print a[1] }')
fi
rpids=
for m in $servers; do
	redis-cli -h "${m%:*}" -p "${m#*:}" flushall >/dev/null
	rpids="$rpids $(redis-cli -h "${m%:*}" -p "${m#*:}" info server | tr -d '\r' | awk -F: '$1 == "process_id" { print $2 }')"
done

export HUB_JWT_SECRET=$secret HUB_API_KEYS=$key HUB_MAX_CONNECTIONS_PER_USER=0 \
	HUB_LOG_LEVEL=warn HUB_LOG_FORMAT=json HUB_BROKER=$backend HUB_REDIS_URL=$url
HUB_ADDR=$n1 HUB_NODE_NAME=bench1 prlimit --nofile=20000:20000 taskset -c 0 env GOMAXPROCS=1 "$hubd" &
p1=$!
HUB_ADDR=$n2 HUB_NODE_NAME=bench2 prlimit --nofile=20000:20000 taskset -c 1 env GOMAXPROCS=1 "$hubd" &
p2=$!
trap 'kill -TERM $p1 $p2 2>/dev/null || true; wait $p1 $p2 2>/dev/null || true' EXIT
for n in $n1 $n2; do
	i=0
	until curl -sf "http://$n/readyz" >/dev/null; do
		i=$((i + 1))
		[ $i -lt 100 ] || { echo "node $n not ready" >&2; exit 1; }
		sleep 0.1
	done
done

cpu() { awk '{ printf "%.2f", ($14 + $15) / 100 }' "/proc/$1/stat"; }
rcpu() { for p in $rpids; do cpu "$p"; printf ' '; done; }
echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
r0=$(rcpu)
rc=0
prlimit --nofile=20000:20000 taskset -c 1 env GOMAXPROCS=1 "$hubbench" --url "http://$n1" --api-url "http://$n2" \
	--secret $secret --api-key $key --pid $p1 "$@" || rc=$?
echo "cpu s: node1 $(cpu $p1) node2 $(cpu $p2); redis before: $r0 after: $(rcpu)"
exit $rc
