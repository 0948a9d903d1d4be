# obsflow: the two set-up commands of the README, and a few helpers.
#   make demo   runs the main job on the embedded default (no servers) and queries what landed
#   make test   installs everything, fetches the real services and runs the whole test suite

PYTHON ?= $(shell command -v python3.11 || command -v python3.12 || command -v python3)
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test groundtruth install services bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/obsflow run --runner bytewax --count 100000 --dev-key
	$(VENV)/bin/obsflow query "SELECT event_type, count(*) AS events, count(DISTINCT session_id) AS sessions FROM obs.events GROUP BY 1 ORDER BY 2 DESC"
	$(VENV)/bin/obsflow query "SELECT reason, count(*) AS records FROM obs.dead_letters GROUP BY 1 ORDER BY 2 DESC"

# Fetch (or build) the real services once; later runs find them in ~/.cache/obsflow.
services: $(STAMP)
	$(PY) -m infra.postgres install
	$(PY) -m infra.kafka fetch
	$(PY) -m infra.s3 fetch
	$(PY) -m infra.trino fetch
	$(PY) -m infra.flink fetch
	command -v prometheus-alertmanager >/dev/null || (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq prometheus-alertmanager)

test: services
	$(PY) -m pytest -q

groundtruth: services  # the ground-truth suite on every engine / read order pair (CI runs two)
	OBSFLOW_GROUNDTRUTH_ALL=1 $(PY) -m pytest -q tests/groundtruth

bench: $(STAMP)
	$(PY) bench/pipeline_throughput.py

clean:
	rm -rf .obsflow
