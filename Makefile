# lbha build, test and benchmark entry points. `make test` is what CI runs.
SHELL := /bin/bash
export PATH := $(PATH):/usr/local/go/bin:$(HOME)/go/bin

GO          ?= go
STATICCHECK ?= honnef.co/go/tools/cmd/staticcheck@v0.8.2
BENCHTIME   ?= 1s
FUZZTIME    ?= 10s
VERSION     ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)

.PHONY: all setup build test unit race lint qemu fuzz bench demo clean

all: build

setup:
	@scripts/setup.sh

build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o bin/lbha ./cmd/lbha
	$(GO) build -o bin/realserver ./test/realserver
	$(GO) build -o bin/democlient ./test/democlient

# The README's test command: installs what is missing, then lint, unit,
# property, golden and namespace tests, the race detector on the packages
# that are shared between goroutines, and the real-kernel tier.
test: setup lint unit race qemu

unit:
	$(GO) test -count=1 -timeout 20m ./...

race:
	$(GO) test -count=1 -race -short -timeout 20m ./dest/... ./persist/... ./ipvs/... ./syncd/... ./cluster/... ./internal/... ./vip/...

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	$(GO) run $(STATICCHECK) ./...

# The real-kernel tier: Debian's kernel (with IPVS) under qemu runs the
# kernel dataplane's tests and an agent with the kernel dataplane (about
# 20 s once the kernel and initramfs are cached in /var/cache/lbha-qemu).
qemu:
	scripts/qemu/test.sh

# A short run of every fuzz target; FUZZTIME=5m for a real campaign.
fuzz:
	scripts/fuzz.sh $(FUZZTIME)

# Every benchmark, then the proxy against HAProxy and a direct connection
# in network namespaces (root, about 2.5 minutes).
bench:
	$(GO) test -run '^$$' -bench . -benchmem -benchtime $(BENCHTIME) ./...
	LBHA_BENCH_PROXY=1 $(GO) test -run '^$$' -bench Proxy -benchtime 1x -timeout 20m -v ./test/bench/

# The main job: a live cluster with real servers and clients in network
# namespaces, and a kill -9 failover.
demo: setup build
	@scripts/demo.sh

clean:
	rm -rf bin
