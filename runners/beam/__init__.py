"""Apache Beam runner: the spec as a Beam pipeline (``pipeline``), on the DirectRunner
locally; the same transforms run on the FlinkRunner at scale."""

import logging


class _QuietApitools(logging.Filter):
    """Drops Beam's "apitools not found" warning (its optional Google Cloud clients,
    logged on the root logger when apache_beam is imported): nothing a user can act on."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("apitools not found")


if not any(isinstance(f, _QuietApitools) for f in logging.getLogger().filters):
    logging.getLogger().addFilter(_QuietApitools())
