# The two quick-start commands are `make run` and `make test`; both first
# install what a fresh Debian machine with Rust lacks (`make setup`).

CARGO ?= cargo

.PHONY: run test lint setup setup-test bench-accept bench-relay crash-relay bench-fetch bench-tls bench-imap-stress bench-dkim bench-inject bench-idle bench-deep-queue bench-large bench-scale sync-clients

# RocksDB's bindings are generated at build time and need libclang; RocksDB
# itself needs a C++ compiler; the end-to-end tests use python3's smtplib.
# scripts/setup.sh checks each the way the build will use it and installs
# only what is missing (root, or sudo); scripts/test-setup.sh tests it.
setup:
	@./scripts/setup.sh

# What `make test` adds: the mail clients it drives (swaks, openssl) and
# Prometheus (promtool lints /metrics; a real server scrapes it).
setup-test:
	@./scripts/setup.sh test

## Start the server on its embedded store (./ringpost-data), SMTP on 127.0.0.1:2525.
run: setup
	$(CARGO) run --release -p ringpost -- serve

## Every test of every crate, and of the set-up script.
test: setup-test
	./scripts/test-setup.sh
	$(CARGO) test --workspace --all-targets
	$(CARGO) test --workspace --doc

## Formatting and lints, as CI checks them.
lint: setup
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

## Durable accept rate, ringpost vs Postfix on this machine (installs Postfix).
bench-accept: setup
	./loadtest/bench-accept.sh

## Relay throughput end to end (blaster -> relay -> sink), ringpost vs Postfix
## on this machine (installs Postfix).
bench-relay: setup
	$(CARGO) build --release -p ringpost -p ringpost-loadtest
	SKIP_BUILD=1 ./loadtest/bench-relay.sh

## SIGKILL ringpost mid-blast while it relays, restart it: nothing acked is lost.
crash-relay: setup
	$(CARGO) build --release -p ringpost -p ringpost-loadtest
	SKIP_BUILD=1 ./loadtest/crash-relay.sh

## A whole mailbox (10,000 mixed messages) over IMAP and POP3, ringpost vs
## Dovecot on this machine (installs Dovecot).
bench-fetch: setup
	./loadtest/bench-fetch.sh

## mbsync and offlineimap (IMAP) and fetchmail (POP3) sync a ringpost
## mailbox, the IMAP ones twice (incremental); every message must arrive
## intact (installs isync, offlineimap3 and fetchmail).
sync-clients: setup
	./loadtest/sync-clients.sh

## imaptest's stress mode against ringpost and Dovecot in one run
## (IMAPTEST=path to imaptest, built by hand; not shipped).
bench-imap-stress: setup
	./loadtest/bench-imap-stress.sh

## What TLS costs the accept path: plaintext against STARTTLS and implicit
## TLS with AUTH, same server and load, same run.
bench-tls: setup
	./loadtest/bench-tls.sh

## What DKIM signing costs the accept path: signing off, RSA-2048 and
## Ed25519, same blaster and load, same run.
bench-dkim: setup
	./loadtest/bench-dkim.sh

## SMTP over HTTP injection: the same messages, same server, same run.
bench-inject: setup
	./loadtest/bench-inject.sh

## Resident memory of 10,000 idle SMTP connections and 10,000 idle IMAP
## sessions (CONNECTIONS=N for another number).
bench-idle: setup
	./loadtest/bench-idle.sh

## A million deferred queue entries: accept beside them, memory, queue stats,
## restart to first delivery (ENTRIES=N for another number).
bench-deep-queue: setup
	./loadtest/bench-deep-queue.sh

## 100 KB messages: durable accept against the disk's fsynced write bandwidth.
bench-large: setup
	./loadtest/bench-large.sh

## Durable accept with 1, 2, 4, ... shards (pinned when the CPUs allow).
bench-scale: setup
	./loadtest/bench-scale.sh
