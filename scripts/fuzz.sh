#!/usr/bin/env bash
# Runs every fuzz target in the module for a while each (default 10s):
#   scripts/fuzz.sh [DURATION]      e.g. scripts/fuzz.sh 5m
# go test accepts one -fuzz target per package run, so targets are listed
# first and run one by one.
set -euo pipefail
cd "$(dirname "$0")/.."
t=${1:-10s}
fail=0
for pkg in $(go list ./...); do
	for target in $(go test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz' || true); do
		echo "fuzz: $pkg $target ($t)"
		if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$t" "$pkg" >/tmp/lbha-fuzz.$$.log 2>&1; then
			cat /tmp/lbha-fuzz.$$.log
			fail=1
		else
			tail -n 2 /tmp/lbha-fuzz.$$.log | head -n 1
		fi
	done
done
rm -f /tmp/lbha-fuzz.$$.log
exit $fail
