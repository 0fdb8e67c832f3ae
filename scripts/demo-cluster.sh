#!/usr/bin/env bash
# Cluster failover demo: two directors and a witness, each in its own network
# namespace on a private bridge, plus a client namespace. Shows the members
# and status, kills the master with SIGKILL, and shows the VIP and the
# client's neighbour entry moving to the new master. Needs root. Everything
# it creates is removed on exit (namespaces by name, processes by PID).
set -euo pipefail
cd "$(dirname "$0")/.."
lbha=$PWD/bin/lbha
[ -x "$lbha" ] || { echo "demo: build first (make build)" >&2; exit 1; }
if [ "$(id -u)" != 0 ]; then echo "demo: the cluster part needs root (network namespaces); skipped"; exit 0; fi

p=lbdemo$$                       # unique prefix for every namespace
work=$(mktemp -d /tmp/lbha-demo.XXXXXX)
pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
	for ns in $p-sw $p-dir1 $p-dir2 $p-wit1 $p-client; do ip netns del "$ns" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
inns() { local ns=$1; shift; ip netns exec "$p-$ns" "$@"; }

ip netns add $p-sw
ip -n $p-sw link add br0 type bridge mcast_snooping 0
ip -n $p-sw link set br0 up
i=0
for n in dir1 dir2 wit1 client; do
	i=$((i+1))
	ip netns add $p-$n
	ip -n $p-sw link add v$i type veth peer name e$i
	ip -n $p-sw link set v$i master br0 up
	ip -n $p-sw link set e$i netns $p-$n
	inns $n ip link set e$i name eth0
	inns $n ip link set lo up
	inns $n ip link set eth0 up
done
inns dir1 ip addr add 192.0.2.11/24 dev eth0
inns dir2 ip addr add 192.0.2.12/24 dev eth0
inns wit1 ip addr add 192.0.2.13/24 dev eth0
inns client ip addr add 192.0.2.50/24 dev eth0

peers='    - {name: dir1, address: 192.0.2.11, role: director}
    - {name: dir2, address: 192.0.2.12, role: director}
    - {name: wit1, address: 192.0.2.13, role: witness}'
for n in dir1 dir2 wit1; do
	addr=$(inns $n ip -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1)
	role=director; extra="vips:
  - {address: 192.0.2.100/24, interface: eth0}
sync: {interface: eth0, syncid: 1}"
	prio=", priority: 150"; [ $n = dir2 ] && prio=", priority: 100"
	if [ $n = wit1 ]; then role=witness; extra=""; prio=""; fi
	cat >"$work/$n.yaml" <<YAML
node: {name: $n, role: $role$prio, bind_address: $addr, data_dir: $work/$n}
cluster:
  peers:
$peers
api: {socket: $work/$n.sock}
$extra
YAML
	cmd=agent; [ $role = witness ] && cmd=witness
	ip netns exec $p-$n "$lbha" $cmd --config "$work/$n.yaml" --log-level warn 2>"$work/$n.log" &
	pids+=($!)
	eval "pid_$n=$!"
	disown $!   # no job-control chatter when the demo kills it
done
cli() { local n=$1; shift; "$lbha" "$@" --socket "$work/$n.sock"; }

master() { for n in dir1 dir2; do cli $n status --json 2>/dev/null | grep -q '"state": "MASTER"' && { echo $n; return; }; done; echo none; }
for _ in $(seq 100); do [ "$(master)" != none ] && break; sleep 0.1; done
sleep 1.5   # let preemption settle and the backup finish its resync

say "lbha members"
cli wit1 members
m=$(master); b=dir1; [ $m = dir1 ] && b=dir2
say "lbha status on the master ($m)"
cli $m status
say "lbha sync stats on the backup ($b)"
cli $b sync stats

inns client ping -c1 -W1 192.0.2.100 >/dev/null
mac() { inns $1 cat /sys/class/net/eth0/address; }
say "the client reaches the VIP 192.0.2.100 at $m's MAC"
inns client ip neigh show 192.0.2.100
echo "($m is $(mac $m), $b is $(mac $b))"

say "kill -9 $m"
pid_var=pid_$m
t0=$(date +%s%N)
kill -9 "${!pid_var}"
while [ "$(cli $b status --json 2>/dev/null | grep -c '"state": "MASTER"')" = 0 ]; do sleep 0.005; done
t1=$(date +%s%N)
want=$(mac $b)
while ! inns client ip neigh show 192.0.2.100 | grep -q "$want"; do sleep 0.005; done
t2=$(date +%s%N)
inns client ping -c1 -W1 192.0.2.100 >/dev/null && echo "the client reaches the VIP again"
printf '%s is MASTER %d ms after the kill; the client'"'"'s neighbour entry points at it after %d ms\n' \
	"$b" $(( (t1-t0)/1000000 )) $(( (t2-t0)/1000000 ))
inns client ip neigh show 192.0.2.100
say "lbha status on the new master ($b)"
cli $b status
say "the killed master's kernel drops its copy of the VIP when the 1 s lifetime runs out"
sleep 1.2
inns $m ip -o addr show dev eth0 | grep -q 192.0.2.100 && echo "still there (unexpected)" || echo "gone from $m"
