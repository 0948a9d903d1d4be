"""The defaults of a run, written once: ``obsflow run``'s flags (:mod:`runners.cli.run`),
:class:`runners.job.RunRequest` and :class:`runners.bytewax.cluster.ClusterRun` all take
them from here."""

#: embedded source: records per source
COUNT = 100_000
#: embedded source: the generator's seed
SEED = 42
#: embedded source: simulated arrival rate, records/s
RATE_PER_S = 2000.0
#: embedded source: share of malformed records the generator injects
BAD_FRACTION = 0.01
#: embedded source: records per batch
BATCH_SIZE = 5000
#: the engine ``obsflow run`` uses
RUNNER = "bytewax"
