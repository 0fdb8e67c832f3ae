#!/bin/bash
# Runs inside the qemu guest (see scripts/qemu/test.sh): the real-kernel tier.
# 1. the ipvs/kernel tests against the guest's IPVS;
# 2. an lbha agent with the kernel dataplane: its services in the kernel as
#    `lbha services --save` says, the kernel's master sync daemon started by
#    role, a hand edit repaired.
# Exits non-zero on the first failure. Go runs 15-20x slower under TCG:
# waits are generous.
set -uo pipefail
cd /lbha
fail() { echo "GUEST FAIL: $*"; exit 1; }
step() { echo; echo "=== guest: $*"; }

step "ipvs/kernel against the real kernel"
./kernel.test -test.run RealKernel -test.v -test.timeout 300s || fail "ipvs/kernel real-kernel tests"

step "lbha agent with the kernel dataplane"
ip link add sync0 type dummy && ip addr add 203.0.113.1/24 dev sync0 && ip link set sync0 up multicast on
mkdir -p /tmp/agent
cat >/tmp/agent/lbha.yaml <<'YAML'
node: {name: d1, role: director, bind_address: 127.0.0.1, data_dir: /tmp/agent/data}
cluster:
  peers: [{name: d1, address: 127.0.0.1, role: director}]
api: {socket: /tmp/agent/lbha.sock}
dataplane: auto
sync: {interface: sync0, syncid: 3}
services:
  - protocol: tcp
    address: 192.0.2.100:80
    scheduler: wlc
    persistence: {timeout: 600s, netmask: 255.255.255.0}
    real_servers:
      - {address: 198.51.100.11:8080, forward: masq, weight: 2}
      - {address: 198.51.100.12:8080, forward: masq}
  - protocol: udp
    address: "[2001:db8::100]:5060"
    scheduler: rr
    persistence: {timeout: 60s, prefix: 64, engine: sip}
    one_packet: true
    real_servers: [{address: "2001:db8::11", forward: masq}]
YAML
./lbha agent --config /tmp/agent/lbha.yaml --log-level info >/tmp/agent/log 2>&1 &
agent=$!
cli() { ./lbha "$@" --socket /tmp/agent/lbha.sock; }
ok=0
for _ in $(seq 600); do
	if cli status --json 2>/dev/null | grep -q '"state": "MASTER"'; then ok=1; break; fi
	sleep 0.1
done
[ $ok = 1 ] || { cat /tmp/agent/log; fail "the agent did not become master"; }
cli status | grep -q "dataplane *kernel" || { cli status; fail "dataplane auto did not pick the kernel"; }
want=$(./lbha config export-ipvsadm /tmp/agent/lbha.yaml)
for _ in $(seq 100); do [ "$(ipvsadm -Sn)" = "$want" ] && break; sleep 0.1; done
got=$(ipvsadm -Sn)
[ "$got" = "$want" ] || { echo "want:"; echo "$want"; echo "ipvsadm -Sn:"; echo "$got"; cat /tmp/agent/log; fail "kernel services differ from the configuration"; }
echo "ipvsadm -Sn equals the configuration's export:"; echo "$got"
[ "$(cli services --save)" = "$got" ] || fail "lbha services --save differs from ipvsadm -Sn"
cli services | head -n 1 | grep -q "dataplane: kernel" || fail "lbha services does not name the kernel dataplane"
for _ in $(seq 100); do ipvsadm -L --daemon | grep -q "master sync daemon (mcast=sync0, syncid=3" && break; sleep 0.1; done
ipvsadm -L --daemon | grep "master sync daemon (mcast=sync0, syncid=3" || { ipvsadm -L --daemon; cat /tmp/agent/log; fail "the kernel master sync daemon is not running"; }

ipvsadm -E -t 192.0.2.100:80 -s rr -p 600 -M 255.255.255.0
ipvsadm -d -t 192.0.2.100:80 -r 198.51.100.12:8080
for _ in $(seq 150); do [ "$(ipvsadm -Sn)" = "$want" ] && break; sleep 0.1; done
[ "$(ipvsadm -Sn)" = "$want" ] || { ipvsadm -Sn; fail "a hand edit of the kernel was not repaired"; }
echo "a hand edit (scheduler, removed real server) was repaired"

kill -TERM $agent; wait $agent
ipvsadm -L --daemon | grep -q "sync daemon" && fail "the kernel sync daemon outlived the agent"
[ "$(ipvsadm -Sn)" = "$want" ] || fail "the agent's exit removed services (a restart must not interrupt traffic)"
echo "agent stopped: sync daemon stopped, services kept for the next agent"
echo; echo "=== guest: all real-kernel tests passed"
