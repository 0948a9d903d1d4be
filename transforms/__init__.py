"""Engine-agnostic, batch-oriented transforms: decode, validate, scrub, enrich, shape.

Each transform consumes a :class:`transforms.batch.Batch` (an Arrow table whose ``_i``
column points back at the raw record it came from) and returns the batch of accepted
rows, adding rejected records to the batch's :class:`transforms.batch.Rejects`. Nothing
here imports apache_beam or bytewax."""
