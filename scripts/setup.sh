#!/usr/bin/env bash
# Installs what building and testing lbha needs on a fresh Debian 12 machine,
# and nothing when it is already there. Safe to run repeatedly.
#
#   Debian packages: iproute2, nftables, iputils-ping (namespace tests), haproxy (the
#   baseline of the proxy benchmark), tshark (sync
#   dissector cross-check), ca-certificates, git, make.
#   Go modules: downloaded through the module proxy (go mod download).
set -euo pipefail

need_pkgs=()
want() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed" || need_pkgs+=("$1"); }
for p in ca-certificates git make iproute2 nftables iputils-ping haproxy; do want "$p"; done
if [ "${LBHA_SKIP_TSHARK:-0}" != 1 ]; then want tshark; fi

if [ ${#need_pkgs[@]} -gt 0 ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "setup: missing Debian packages ${need_pkgs[*]}; run as root to install them" >&2
		exit 1
	fi
	echo "setup: installing ${need_pkgs[*]}"
	export DEBIAN_FRONTEND=noninteractive
	# tshark asks whether non-root users may capture; answer no.
	echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
	apt-get update -qq
	apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi

if ! command -v go >/dev/null 2>&1; then
	if [ -x /usr/local/go/bin/go ]; then
		echo "setup: go is in /usr/local/go/bin; add it to PATH" >&2
	else
		echo "setup: Go 1.26 or newer is required (https://go.dev/dl/)" >&2
	fi
	exit 1
fi
go mod download
echo "setup: ok ($(go version | cut -d' ' -f3))"
