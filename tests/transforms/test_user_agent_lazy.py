"""``UserAgentLookup`` imports ``ua-parser`` (and builds its parser) only on the first user
agent it has to parse: building a flow costs neither."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

_SCRIPT = """
import sys
from transforms.lookups import UserAgentLookup
ua = UserAgentLookup(10)
print("ua_parser" in sys.modules)
print(ua.lookup(None))
print("ua_parser" in sys.modules)
print(ua.lookup("Mozilla/5.0 (X11; Linux x86_64; rv:120.0) Gecko/20100101 Firefox/120.0"))
print("ua_parser" in sys.modules)
"""


def test_ua_parser_is_imported_on_the_first_user_agent_parsed():
    out = subprocess.run(
        [sys.executable, "-c", _SCRIPT], cwd=ROOT, capture_output=True, text=True, check=True, timeout=120
    ).stdout.splitlines()
    assert out == [
        "False",
        "Device(device=None, browser=None, browser_version=None, os=None, os_version=None)",
        "False",
        "Device(device=None, browser='Firefox', browser_version='120.0', os='Linux', os_version=None)",
        "True",
    ]
