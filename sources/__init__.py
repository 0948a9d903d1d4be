"""Sources hand raw records to a runner as :class:`transforms.batch.RawBatch` objects,
one topic partition at a time: the embedded generator (``generator``) and, for real
deployments, Kafka."""
