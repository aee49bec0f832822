# The two quick-start commands are `make run` and `make test`; both install
# what a fresh Debian machine lacks first (scripts/setup.sh).

CARGO ?= cargo

.PHONY: run test lint setup bench-accept

setup:
	@./scripts/setup.sh

## Start the server on its embedded store (./ringpost-data), SMTP on 127.0.0.1:2525.
run: setup
	$(CARGO) run --release -p ringpost -- serve

## Every test of every crate.
test: setup
	$(CARGO) test --workspace --all-targets
	$(CARGO) test --workspace --doc

## Formatting and lints, as CI checks them.
lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Durable accept rate, ringpost vs Postfix on this machine (installs Postfix).
bench-accept: setup
	./loadtest/bench-accept.sh
