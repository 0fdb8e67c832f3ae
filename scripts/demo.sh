#!/usr/bin/env bash
# The main job. First, as root, a live cluster in network namespaces: two
# directors, a witness, three real servers and persistent clients, with a
# kill -9 failover. Then the offline tools (configuration checks, ipvsadm
# conversion, sync decoding of real-kernel datagrams).
set -euo pipefail
cd "$(dirname "$0")/.."
lbha=bin/lbha
[ -x "$lbha" ] || { echo "demo: build first (make build)" >&2; exit 1; }

say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "live cluster: two directors and a witness, three real servers, six clients, in network namespaces"
scripts/demo-cluster.sh

say "lbha config validate examples/lbha.yaml (a director of a two-director + witness cluster)"
$lbha config validate examples/lbha.yaml

say "lbha config validate on a file with ten different mistakes: every one located"
$lbha config validate cmd/lbha/testdata/config/ten-mistakes.yaml || echo "(exit status $?)"

say "lbha config export-ipvsadm examples/lbha.yaml: the services as ipvsadm -Sn prints them"
$lbha config export-ipvsadm examples/lbha.yaml

say "round trip: ipvsadm -Sn -> lbha YAML -> ipvsadm -Sn"
save=cmd/lbha/testdata/config/features.save
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
$lbha config import-ipvsadm "$save" >"$tmp/services.yaml"
head -n 20 "$tmp/services.yaml"; echo "  ..."
$lbha config export-ipvsadm "$tmp/services.yaml" >"$tmp/back.save"
if diff -u "$save" "$tmp/back.save"; then echo "identical: $(wc -l <"$save") lines"; fi

say "lbha sync decode: sync datagrams captured from a real Linux 6.1 kernel (SIP persistence engine)"
$lbha sync decode syncd/wire/testdata/sip-pe.hex | head -n 12
