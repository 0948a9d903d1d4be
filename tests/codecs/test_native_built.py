"""The compiled decoder is the default on both engines, and the parity, cdata and fuzz
tests of the extension skip when it is not installed. So that a build that failed (the
install step only warns) cannot pass as green with those tests skipped, this test fails
unless the extension is installed, with the current layout, or the Python decoders were
chosen on purpose (``OBSFLOW_DECODER=python``)."""

from __future__ import annotations

import os

from schemas.codecs import native_json
from schemas.codecs.native_json import chosen_decoder


def test_the_compiled_decoder_is_installed_unless_python_was_chosen():
    if os.environ.get("OBSFLOW_DECODER") == "python":
        return
    assert native_json.native_available(), (
        "obsflow_native is not installed or is an older build: run `make native` "
        "(its build output says why it failed), or set OBSFLOW_DECODER=python to test the Python decoders"
    )
    assert chosen_decoder() == "native"
