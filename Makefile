# The two commands: `make demo` and `make test`. Everything else is a building block.
SHELL := bash
CARGO ?= cargo

.PHONY: demo control-plane control-plane-tools start bench fuzz chaos soak image image-kata bump-gvisor generate test test-unit test-control-plane test-node test-system verify fmt-check lint tools prereqs clean-tools

## demo: run the controller on a local control plane against example/ and show the results
demo:
	@hack/prereqs.sh demo
	@# One after the other: on 2 cores both builds are CPU-bound, and side by side they took
	@# longer from empty caches (902 s) than in turn (795 s); see the README.
	@echo "building kube-apiserver and etcd (Go, a line every 30 s), then the demo (Rust, Cargo's progress)..."
	@hack/tools.sh ensure control-plane
	$(CARGO) build --locked -p sandbox-demo --bin demo
	$(CARGO) run --locked --quiet -p sandbox-demo --bin demo

## control-plane: start a local etcd + kube-apiserver with Gardener's CRDs (ARGS=--hold to keep it)
control-plane: control-plane-tools
	$(CARGO) run --locked --quiet -p sandbox-testenv --features cli --bin local-control-plane -- $(ARGS)

## bench: the controller under gardenlet-like load, the node agent on a real containerd, the whole chain on the test shoot, and the Shoot admission webhook under 100 concurrent reviews (release build); figures go to docs/benchmarks.md
bench: tools
	$(CARGO) build --locked --release -p gardener-extension-runtime-sandbox -p sandbox-bench
	target=$$($(CARGO) metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])'); \
	  $$target/release/controller-bench $(BENCH_ARGS) && $$target/release/node-agent-bench $(NODE_BENCH_ARGS) && \
	  $$target/release/shoot-bench $(SHOOT_BENCH_ARGS) && $$target/release/admission-bench $(ADMISSION_BENCH_ARGS)

## image: the controller's and the node agent's OCI image archives for linux/amd64 and linux/arm64 (release binaries, pinned runsc), built from local files
image: tools
	$(CARGO) build --locked --release -p sandbox-image --bin agent-image --bin controller-image
	$(CARGO) build --locked --release -p gardener-extension-runtime-sandbox --target x86_64-unknown-linux-gnu --target aarch64-unknown-linux-gnu
	target=$$($(CARGO) metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])'); \
	  bin=gardener-extension-runtime-sandbox; \
	  amd64=$$target/x86_64-unknown-linux-gnu/release/$$bin; arm64=$$target/aarch64-unknown-linux-gnu/release/$$bin; \
	  mkdir -p $$target/images && \
	  $$target/release/controller-image --binary amd64=$$amd64 --binary arm64=$$arm64 \
	    --out $$target/images/controller.oci.tar && \
	  $$target/release/agent-image --runtime gvisor --binary amd64=$$amd64 --binary arm64=$$arm64 \
	    --payload amd64=$$(hack/tools.sh path gvisor) --payload arm64=$$(hack/tools.sh path gvisor-arm64) \
	    --out $$target/images/node-agent.oci.tar --image-vector-entry $$target/images/node-agent.imagevector.yaml

## image-kata: Kata's node agent image for the host's architecture from a payload folder (KATA_PAYLOAD=DIR, KATA_VERSION=tag; docs/kata.md)
image-kata:
	@test -n "$(KATA_PAYLOAD)" && test -n "$(KATA_VERSION)" || { echo "usage: make image-kata KATA_PAYLOAD=<payload folder> KATA_VERSION=<kata version>"; exit 1; }
	$(CARGO) build --locked --release -p sandbox-image --bin agent-image -p gardener-extension-runtime-sandbox
	target=$$($(CARGO) metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])'); \
	  arch=$$(uname -m | sed 's/x86_64/amd64/;s/aarch64/arm64/'); \
	  mkdir -p $$target/images && \
	  $$target/release/agent-image --runtime kata --require-checksums --binary $$arch=$$target/release/gardener-extension-runtime-sandbox \
	    --payload $$arch=$(KATA_PAYLOAD) --name ghcr.io/gardener-extension-runtime-sandbox/node-agent-kata:$(KATA_VERSION) \
	    --out $$target/images/kata-node-agent.oci.tar --image-vector-entry $$target/images/kata-node-agent.imagevector.yaml

## bump-gvisor: move the gVisor pin to the newest the Go module proxy serves, rebuild both pins and run the node tier (docs/operations.md)
bump-gvisor:
	hack/bump-gvisor.sh

## generate: example/controller-registration.yaml and example/extension.yaml from the chart (a test fails when they are stale)
generate:
	$(CARGO) run --locked --quiet -p sandbox-image --bin registration

## test: check (or install) the prerequisites, build the pinned tools if missing, then run every tier of tests (hack/test-tiers, docs/testing.md)
test:
	@hack/prereqs.sh test
	hack/tools.sh ensure all
	hack/test.sh all

## test-unit: the tests that need no upstream binary and no root (crates' own tests, decoders, property tests)
test-unit:
	hack/test.sh unit

## test-control-plane: controller, webhooks, chart and garden against a real etcd + kube-apiserver (+ Gardener's binaries, Helm)
test-control-plane:
	hack/test.sh control-plane

## test-node: the node agent on real containerd 1.7/2.4 with runsc and Kata's shim (root)
test-node:
	hack/test.sh node

## test-system: the test shoot end to end, the switch-over against the Go extension, chaos and multi-arch images (root)
test-system:
	hack/test.sh system

## fuzz: the property tests (providerConfig and admission decoders, pool names, flag values, containerd editor, node plan decoder, the webhook's AdmissionReview decoder) with FUZZ_CASES cases each from a new seed, printed (replay: make fuzz PROPTEST_RNG_SEED=<seed>)
FUZZ_CASES ?= 50000
fuzz:
	@seed=$${PROPTEST_RNG_SEED:-$$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}; \
	  echo "fuzz: $(FUZZ_CASES) cases per property from seed $$seed (replay: make fuzz PROPTEST_RNG_SEED=$$seed)"; \
	  PROPTEST_RNG_SEED=$$seed PROPTEST_CASES=$(FUZZ_CASES) $(CARGO) test --locked -p sandbox-runtime -p sandbox-node-agent -p sandbox-webhook \
	    --test admission_fuzz --test hostile_names --test hostile_input --test admission_decoder_fuzz -- --nocapture

## chaos: the controller under faults (killed replicas and leaders, kube-apiserver restarts, etcd frozen) for CHAOS_ROUNDS rounds over CHAOS_SHOOTS shoots, from a printed seed (replay: make chaos CHAOS_SEED=<seed>); make test runs a short one
CHAOS_ROUNDS ?= 20
CHAOS_SHOOTS ?= 30
chaos:
	@seed=$${CHAOS_SEED:-$$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}; \
	  echo "chaos: seed $$seed (replay: make chaos CHAOS_SEED=$$seed)"; \
	  CHAOS_SEED=$$seed CHAOS_ROUNDS=$(CHAOS_ROUNDS) CHAOS_SHOOTS=$(CHAOS_SHOOTS) $(CARGO) test --locked -p gardener-extension-runtime-sandbox \
	  --test chaos -- --nocapture

## soak: 5,000 ContainerRuntimes in 2,500 shoots re-reconciled every SOAK_PERIOD seconds for SOAK_MINUTES (controller RSS slope, latency, errors), then 1,000 create/delete cycles that must leave nothing behind (release build; figures in docs/reliability.md)
SOAK_MINUTES ?= 10
SOAK_PERIOD ?= 600
soak: tools
	$(CARGO) build --locked --release -p gardener-extension-runtime-sandbox -p sandbox-bench
	target=$$($(CARGO) metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])'); \
	  $$target/release/controller-bench --shoots 2500 --pools 2 --soak-minutes $(SOAK_MINUTES) --soak-period-seconds $(SOAK_PERIOD) --cycles 1000 $(SOAK_ARGS)

## verify: formatting, clippy with -D warnings, then every test (what CI runs)
verify: fmt-check lint test

fmt-check:
	$(CARGO) fmt --all -- --check

lint:
	$(CARGO) clippy --workspace --all-targets --all-features --locked -- -D warnings

## control-plane-tools: only what a local control plane needs (kube-apiserver, etcd, Gardener's CRDs)
control-plane-tools:
	hack/tools.sh ensure control-plane

## start: run the controller locally against dev/kubeconfig (a seed, a kind cluster, or `make control-plane ARGS=--hold`)
start:
	@test -f dev/kubeconfig || { echo "dev/kubeconfig is missing: copy a seed's kubeconfig there, or run: make control-plane ARGS='--hold --kubeconfig-out=dev/kubeconfig'"; exit 1; }
	$(CARGO) run --locked -p gardener-extension-runtime-sandbox -- controller \
	  --kubeconfig=dev/kubeconfig --leader-election=false --log-format=text \
	  --metrics-bind-address=127.0.0.1:8080 --health-bind-address=127.0.0.1:8081 $(ARGS)

## tools: build the pinned kube-apiserver and etcd and fetch Gardener's CRDs (cached by version)
tools:
	hack/tools.sh ensure all

## prereqs: check (and where possible install) Go, Rust components and system packages
prereqs:
	hack/prereqs.sh

clean-tools:
	rm -rf .cache/tools
