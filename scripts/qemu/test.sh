#!/usr/bin/env bash
# The real-kernel tier (`make qemu`): builds static test binaries and lbha,
# then runs scripts/qemu/guest.sh in Debian's kernel under qemu.
set -euo pipefail
cd "$(dirname "$0")/../.."
scripts/qemu/setup.sh
out=$(mktemp -d /tmp/lbha-qemu.XXXXXX)
trap 'rm -rf "$out"' EXIT
export CGO_ENABLED=0
go test -c -o "$out/kernel.test" ./ipvs/kernel/
go build -o "$out/lbha" ./cmd/lbha
go build -o "$out/realserver" ./test/realserver
go build -o "$out/democlient" ./test/democlient
scripts/qemu/run.sh -f "$out/kernel.test" -f "$out/lbha" -f "$out/realserver" -f "$out/democlient" -f scripts/qemu/guest-failover.sh scripts/qemu/guest.sh \
	${LBHA_QEMU_FAILOVER:+--failover}
