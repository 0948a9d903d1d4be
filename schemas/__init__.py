"""Wire schemas (Avro ``.avsc`` under ``avro/``), their Arrow read schemas, the signal
profiles that tell the generic transforms where each field is, and the Iceberg table
definitions (``tables``). Nothing here imports an engine."""
