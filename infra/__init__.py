"""Scripts and fixtures that fetch and start the real local services.

Every service module here exposes ``start(...) -> handle`` (a running service bound to
127.0.0.1 on a free port, with a ``stop()`` method) and a command line
(``python -m infra.<service> start|stop|status``) for local use. Downloads are cached
under :func:`infra.service.cache_dir`, never in the repository.
"""
