"""``obsflow ui``: the window over the tables (pipeline health, services, traces with their
logs, product funnels), served by Starlette from DuckDB or Trino with the same SQL."""
