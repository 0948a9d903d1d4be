from tests.fixtures.alertmanager import alertmanager_server  # noqa: F401  (fixture)
