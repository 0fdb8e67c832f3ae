#!/usr/bin/env bash
# The live demo: two directors and a witness, three real servers that answer
# with their name, and six persistent clients, each in its own network
# namespace on a private bridge. Shows the members, the master's status and
# its services, kills the master with SIGKILL while the clients keep
# connecting, then prints the gap the clients saw and each client's real
# server before and after. Needs root. Everything it creates is removed on
# exit (namespaces by name, processes by PID).
set -euo pipefail
cd "$(dirname "$0")/.."
bin=$PWD/bin
for b in lbha realserver democlient; do
	[ -x "$bin/$b" ] || { echo "demo: build first (make build)" >&2; exit 1; }
done
if [ "$(id -u)" != 0 ]; then echo "demo: the cluster part needs root (network namespaces); skipped"; exit 0; fi

p=lbdemo$$                       # unique prefix for every namespace
work=$(mktemp -d /tmp/lbha-demo.XXXXXX)
pids=()
nodes="dir1 dir2 wit1 rs1 rs2 rs3 client"
cleanup() {
	for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
	for ns in $p-sw $(for n in $nodes; do echo $p-$n; done); do ip netns del "$ns" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
inns() { local ns=$1; shift; ip netns exec "$p-$ns" "$@"; }
ms() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

# One bridge; every node gets a veth into it. 192.0.2.0/24 is a documentation
# range and exists only inside these namespaces.
ip netns add $p-sw
ip -n $p-sw link add br0 type bridge mcast_snooping 0
ip -n $p-sw link set br0 up
declare -A addr=([dir1]=192.0.2.11 [dir2]=192.0.2.12 [wit1]=192.0.2.13 [rs1]=192.0.2.21 [rs2]=192.0.2.22 [rs3]=192.0.2.23 [client]=192.0.2.50)
i=0
for n in $nodes; do
	i=$((i+1))
	ip netns add $p-$n
	ip -n $p-sw link add v$i type veth peer name e$i
	ip -n $p-sw link set v$i master br0 up
	ip -n $p-sw link set e$i netns $p-$n
	inns $n ip link set e$i name eth0
	inns $n ip link set lo up
	inns $n ip addr add ${addr[$n]}/24 dev eth0
	inns $n ip link set eth0 up
done
clients=""
for c in 51 52 53 54 55 56; do
	inns client ip addr add 192.0.2.$c/24 dev eth0
	clients="$clients${clients:+,}192.0.2.$c"
done
inns client sysctl -qw net.ipv4.conf.eth0.arp_accept=1   # learn the VIP's owner from gratuitous ARP

for n in rs1 rs2 rs3; do
	ip netns exec $p-$n "$bin/realserver" --name $n --tcp ${addr[$n]}:8080 2>"$work/$n.log" &
	pids+=($!); disown $!
done

peers='    - {name: dir1, address: 192.0.2.11, role: director}
    - {name: dir2, address: 192.0.2.12, role: director}
    - {name: wit1, address: 192.0.2.13, role: witness}'
services='vips:
  - {address: 192.0.2.100/24, interface: eth0}
sync: {interface: eth0, syncid: 1}
services:
  - name: web
    protocol: tcp
    address: 192.0.2.100:80
    scheduler: rr
    persistence: {timeout: 300s}
    real_servers:
      - {address: 192.0.2.21:8080, forward: masq}
      - {address: 192.0.2.22:8080, forward: masq}
      - {address: 192.0.2.23:8080, forward: masq}
    health_check: {type: tcp, interval: 1s, timeout: 500ms}'
for n in dir1 dir2 wit1; do
	role=director; extra=$services; prio=", priority: 150"; cmd=agent
	[ $n = dir2 ] && prio=", priority: 100"
	if [ $n = wit1 ]; then role=witness; extra=""; prio=""; cmd=witness; fi
	cat >"$work/$n.yaml" <<YAML
node: {name: $n, role: $role$prio, bind_address: ${addr[$n]}, data_dir: $work/$n}
cluster:
  peers:
$peers
api: {socket: $work/$n.sock}
$extra
YAML
	ip netns exec $p-$n "$bin/lbha" $cmd --config "$work/$n.yaml" --log-level warn 2>"$work/$n.log" &
	pids+=($!); disown $!
	eval "pid_$n=$!"
done
cli() { local n=$1; shift; "$bin/lbha" "$@" --socket "$work/$n.sock"; }
master() { for n in dir1 dir2; do cli $n status --json 2>/dev/null | grep -q '"state": "MASTER"' && { echo $n; return; }; done; echo none; }

for _ in $(seq 100); do [ "$(master)" != none ] && break; sleep 0.1; done
# Let preemption settle, the backup finish its resync and the health
# checks pass.
for _ in $(seq 50); do
	inns client "$bin/democlient" --vip 192.0.2.100:80 --src 192.0.2.50 --duration 200ms --json 2>/dev/null | grep -q '"answers":[1-9]' && break
	sleep 0.1
done
sleep 1

say "lbha members"
cli wit1 members
m=$(master); b=dir1; [ $m = dir1 ] && b=dir2
say "lbha status on the master ($m)"
cli $m status
say "lbha services on the master ($m): the userspace dataplane (this kernel has no IPVS)"
cli $m services

say "six clients connect to 192.0.2.100:80 every 20 ms; in 1.5 s the master is killed"
ip netns exec $p-client "$bin/democlient" --vip 192.0.2.100:80 --src "$clients" --interval 20ms --duration 4s >"$work/clients.txt" &
cpid=$!; pids+=($cpid)
sleep 1.5
pid_var=pid_$m
t0=$(date +%s%N)
kill -9 "${!pid_var}"
echo "kill -9 $m (pid ${!pid_var})"
until cli $b status --json 2>/dev/null | grep -q '"state": "MASTER"'; do sleep 0.005; done
echo "$b is MASTER $(ms $t0) ms after the kill"
wait $cpid || true

say "what the clients saw (before = first answer, after = last answer; longest gap between two answers)"
cat "$work/clients.txt"

say "lbha status on the new master ($b)"
cli $b status
say "lbha services on the new master ($b)"
cli $b services
say "lbha conns on the new master ($b), templates only: the persistence synced from $m"
cli $b conns >"$work/conns.txt"
awk 'NR <= 3 || / (NONE|ASSURED) /' "$work/conns.txt"
echo "... and $(grep -c CLOSE "$work/conns.txt" || true) closed client connections (CLOSE entries linger 10 s, as in IPVS)"
