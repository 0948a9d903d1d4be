"""Apache Beam runner: the spec as a Beam pipeline (``pipeline``), on the DirectRunner
locally; the same transforms run on the FlinkRunner at scale."""
