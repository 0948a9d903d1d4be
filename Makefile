# obsflow: the two set-up commands of the README, and a few helpers.
#   make demo   runs the main job on the embedded default (no servers) and queries what landed
#   make test   installs everything, fetches the real services and runs the whole test suite
#   make fuzz   the long fuzz run (tests/fuzz: random, 3,000 examples per case; OBSFLOW_FUZZ_EXAMPLES=N to change)
#   make lint   ruff check + ruff format --check + mypy (CI runs it before the tests)
#   make test-fast  the tests that need no service (-m "not services and not slow"; no Kafka, S3, Trino, ...)

PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test test-fast lint groundtruth install services bench clean fuzz tracker ui-assets native native-test native-fuzz once-all

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP) tracker ui-assets native

# The compiled decoder (native/: Rust, PyO3, maturin) into the venv; cargo's registry and
# build cache live outside the repo. A failed build is not fatal: the Python decoders run
# then, after one warning line (docs/decoder.md).
CARGO_CACHE := $${OBSFLOW_CACHE:-$$HOME/.cache/obsflow}/cargo
native: $(STAMP)
	$(PY) -m pip install --quiet "maturin>=1.5,<2"
	cd native && CARGO_HOME="$(CARGO_CACHE)/home" CARGO_TARGET_DIR="$(CARGO_CACHE)/target" VIRTUAL_ENV="$(abspath $(VENV))" \
		"$(abspath $(VENV))/bin/maturin" develop --release --quiet \
		|| echo "warning: native/ (the compiled decoder) did not build: the Python decoders will be used"

# The extension's own Rust tests (the JSON reader, timestamps, the OTLP reader); its parity
# with the Python decoders is tests/codecs/test_native_parity.py (marker native, in make test).
native-test:
	cd native && CARGO_HOME="$(CARGO_CACHE)/home" CARGO_TARGET_DIR="$(CARGO_CACHE)/target" cargo test --release --lib

# cargo-fuzz over the compiled decoder's pure-Rust core (native/fuzz: the JSON decoder, the
# OTLP protobuf decoders, the OTLP/JSON one against its transcoding oracle, and the Avro decoder), FUZZ_SECONDS per target, seeded from the Python fuzz corpus;
# cargo-fuzz, its build, the corpus and crash inputs live under the cargo cache (outside the
# repo). Stable rustc with RUSTC_BOOTSTRAP=1 (native/fuzz/run.sh). In CI as
# tests/codecs/test_native_fuzz.py (40 s a target).
FUZZ_SECONDS ?= 60
FUZZ_CORPUS ?= $(CARGO_CACHE)/fuzz/corpus
native-fuzz:
	PYTHONPATH=. $(PY) -m tests.fuzz.native_seeds "$(FUZZ_CORPUS)"
	CARGO_CACHE="$(CARGO_CACHE)" native/fuzz/run.sh "$(FUZZ_CORPUS)" $(FUZZ_SECONDS)

# The browser tracker served by `obsflow collect` at /tracker.js (npm cache outside the repo).
TRACKER := collector/tracker
$(TRACKER)/dist/tracker.js: $(TRACKER)/src/tracker.js $(TRACKER)/package-lock.json $(TRACKER)/scripts/build.mjs
	cd $(TRACKER) && npm ci --cache "$${OBSFLOW_CACHE:-$$HOME/.cache/obsflow}/npm" --no-audit --no-fund --loglevel=error && npm run build

tracker: $(TRACKER)/dist/tracker.js

# The browser libraries `obsflow ui` serves (ECharts, htmx) from npm into the git-ignored ui/static/vendor/.
UIWEB := ui/web
ui/static/vendor/.built: $(UIWEB)/package.json $(UIWEB)/package-lock.json
	cd $(UIWEB) && npm ci --cache "$${OBSFLOW_CACHE:-$$HOME/.cache/obsflow}/npm" --no-audit --no-fund --loglevel=error
	mkdir -p ui/static/vendor
	cp $(UIWEB)/node_modules/echarts/dist/echarts.min.js $(UIWEB)/node_modules/htmx.org/dist/htmx.min.js ui/static/vendor/
	touch $@

ui-assets: ui/static/vendor/.built

demo: $(STAMP) native
	$(VENV)/bin/obsflow run --runner bytewax --count 100000 --dev-key
	$(VENV)/bin/obsflow query "SELECT event_type, count(*) AS events, count(DISTINCT session_id) AS sessions FROM obs.events GROUP BY 1 ORDER BY 2 DESC"
	$(VENV)/bin/obsflow query "SELECT reason, count(*) AS records FROM obs.dead_letters GROUP BY 1 ORDER BY 2 DESC"
	@echo "see it in the browser: make ui-assets && $(VENV)/bin/obsflow ui   (then open http://127.0.0.1:8090/)"

# Fetch (or build) the real services once; later runs find them in ~/.cache/obsflow.
services: $(STAMP) tracker ui-assets native
	$(PY) -m infra.postgres install
	$(PY) -m infra.kafka fetch
	$(PY) -m infra.s3 fetch
	$(PY) -m infra.trino fetch
	$(PY) -m infra.flink fetch
	$(PY) -m infra.otelcol build
	command -v prometheus-alertmanager >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus-alertmanager)
	command -v prometheus >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus)
	command -v chromium >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)
	command -v wrk >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk)

test: services
	$(PY) -m pytest -q

# No servers: the tests marked neither `services` (tests/conftest.py marks them by what they use) nor `slow`.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not services and not slow"

# The gates CI runs: lint (ruff check and ruff format --check) and types (mypy, pyproject's [tool.mypy]).
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

# Long fuzz campaigns (make test runs bounded ones): the record fuzz suite and the spec fuzzer.
fuzz: $(STAMP)
	OBSFLOW_FUZZ=long $(PY) -m pytest -q tests/fuzz
	OBSFLOW_SPEC_FUZZ_LONG=1 OBSFLOW_SPEC_FUZZ_EXAMPLES=$${OBSFLOW_SPEC_FUZZ_EXAMPLES:-3000} $(PY) -m pytest -q -p no:cacheprovider tests/pipelines/test_spec_fuzz.py

groundtruth: services  # the ground-truth suite on every engine / read order pair (CI runs two)
	OBSFLOW_GROUNDTRUTH_ALL=1 $(PY) -m pytest -q tests/groundtruth

once-all: services  # per-table effectively-once on every engine / table pair (CI runs one per engine)
	OBSFLOW_ONCE_ALL=1 $(PY) -m pytest -q tests/e2e/test_per_table_once.py

# bench/collect.py drives the door with wrk (Debian package) when it is on PATH.
bench: $(STAMP)
	command -v wrk >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk)
	$(PY) bench/pipeline_throughput.py

clean:
	rm -rf .obsflow
