# tapbridge-cni. Every test target runs as root in network namespaces it
# creates and removes; nothing touches the machine's root netns.
GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X main.Version=$(VERSION)
BIN     := bin/tapbridge-cni
AGENT   := bin/tapbridge-agent
IPAMBIN := bin/tapbridge-ipam
# FUZZTIME unset: each fuzz-short target runs its own execution count.
FUZZTIME ?=
SOAKTIME ?= 3m

.PHONY: all build deps test lint unit integration kube e2e fuzz-short fuzz demo bench soak clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/tapbridge-cni
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(AGENT) ./cmd/tapbridge-agent
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(IPAMBIN) ./cmd/tapbridge-ipam

deps:
	./scripts/install-deps.sh

# Everything, as CI runs it.
test: deps build lint unit integration kube fuzz-short e2e

# The plugin is a short exec on every ADD and DEL: no Kubernetes client,
# Prometheus or DHCP library may enter its import graph (they belong to the
# agent and the IPAM).
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt: $$out"; exit 1; fi
	@deps=$$($(GO) list -deps ./cmd/tapbridge-cni) || exit 1; \
	bad=$$(echo "$$deps" | grep -E 'k8s\.io/|sigs\.k8s\.io/|prometheus|dhcp|insomniacslk'); \
	if [ -n "$$bad" ]; then echo "cmd/tapbridge-cni must not depend on:"; echo "$$bad"; exit 1; fi
	$(GO) vet ./...
	$(GO) vet -tags failpoints ./...
	./build/tools/staticcheck ./...

unit:
	$(GO) test -race -count=1 ./internal/... ./cmd/... ./conf/... ./test/harness/

integration:
	$(GO) test -count=1 -p 1 -timeout 20m ./test/integration/...

# A real kube-apiserver and etcd in a netns of their own (build/kube, made
# by scripts/deps/kube.sh): tapbridge-ipam on 3 simulated nodes.
kube:
	$(GO) test -count=1 -p 1 -timeout 20m ./test/kube/...

e2e:
	$(GO) test -count=1 -p 1 -timeout 20m ./test/e2e/...

# The main job: a sandbox cluster with real VMs, a connectivity matrix, a VM
# restart and a live migration keeping the VM's address (tapbridge-ipam on a
# real kube-apiserver from build/kube: deps builds it once), a clean teardown.
demo: deps build
	$(GO) run ./test/e2e/demo

# Not part of `make test`: the machine is shared, so figures are ratios
# against the upstream bridge plugin, and for tapbridge-ipam against
# whereabouts on one real API server, measured in the same run.
bench: deps build
	./scripts/deps/whereabouts.sh
	$(GO) run ./test/bench -plugin $(BIN) -agent $(AGENT) -ipam $(IPAMBIN) -out bench-results.md

# Bounded fuzzing: the config loader, ADD then DEL on fuzzed configs
# in a throwaway node (the node must be as it was after every input), and
# the agent's DHCPv4 and DHCPv6 handlers and router-solicitation check on
# guest input. The budgets are execution counts (about 10-30 s each on the
# project's machine), not durations: go1.26's fuzz coordinator can fail a
# -fuzztime=<duration> run with "context deadline exceeded" and no failing
# input when a worker is still busy at the deadline (golang/go#75804, fixed
# in Go 1.27; FuzzAddDel's calls, and the minimising of a new input, take
# long enough to hit it). A count has no deadline to race.
fuzz-short:
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(or $(FUZZTIME),600000x) ./internal/config
	$(GO) test -run '^$$' -fuzz '^FuzzAddDel$$' -fuzztime $(or $(FUZZTIME),4000x) ./internal/plugin
	$(GO) test -run '^$$' -fuzz '^FuzzHandle$$' -fuzztime $(or $(FUZZTIME),1000000x) ./internal/dhcp4
	$(GO) test -run '^$$' -fuzz '^FuzzHandle$$' -fuzztime $(or $(FUZZTIME),200000x) ./internal/dhcp6
	$(GO) test -run '^$$' -fuzz '^FuzzSolicitation$$' -fuzztime $(or $(FUZZTIME),300000x) ./internal/ra

# Long churn and SIGKILL runs (short versions of both are in `make test`).
soak: build
	TAPBRIDGE_SOAK=$(SOAKTIME) TAPBRIDGE_KILL_TIME=$(SOAKTIME) $(GO) test -count=1 -p 1 -timeout 60m -run '^(TestChurn|TestKill)$$' -v ./test/integration/

fuzz:
	$(MAKE) fuzz-short FUZZTIME=10m

clean:
	rm -rf bin build
