"""Error-group fingerprints survive deploys (issue 13 item 2): real stack shapes from
Chrome, Firefox, Safari, Node, Python and Java, each written out twice as two deploys /
hosts / cache states would write them (content hashes in bundle names, CDN hosts and
shards, query strings and cache busters, line and column numbers, messages, JVM generated
names): one fingerprint per error, and distinct errors stay apart."""

from __future__ import annotations

import pyarrow as pa
import pytest

from transforms.product import ErrorGrouper, normalize_stack
from transforms.product.fingerprint import fingerprint

pytestmark = pytest.mark.metrics

CHROME = (
    "ChunkLoadError: Loading chunk 417 failed.\n(error: https://{host}/static/js/417.{h}.chunk.js)\n"
    "    at __webpack_require__.f.j (https://{host}/static/js/runtime-main.{h}.js?v={v}:1:{c})\n"
    "    at https://{host}/static/js/runtime-main.{h}.js?v={v}:1:{c}\n"
    "    at Array.reduce (<anonymous>)\n"
    "    at lazyCheckout (https://{host}/static/js/main.{h}.chunk.js:{l}:{c})\n"
    "    at async Promise.all (index 0)"
)
FIREFOX = (
    "ChunkLoadError: Loading chunk 417 failed.\n"
    "lazyCheckout@https://{host}/static/js/417.{h}.chunk.js:{l}:{c}\n"
    "j@https://{host}/static/{v}/js/runtime-main.{h}.js#{v}:1:{c}\n"
    "@https://{host}/static/js/main.{h}.chunk.js:{l}:{c}\n"
)
SAFARI = (
    "TypeError: undefined is not an object (evaluating 'cart.items.length')\n"
    "renderCart@https://{host}/assets/index-{vite}.js:{l}:{c}\n"
    "map@[native code]\n"
    "global code@https://{host}/assets/vendor-{vite}.js?t={v}:2:{c}\n"
    "promiseReactionJob@[native code]"
)
NODE = (
    "TypeError: Cannot read properties of undefined (reading 'id{v}')\n"
    "    at checkout (/srv/app/releases/{v}/dist/server.{h}.js:{l}:{c})\n"
    "    at Layer.handle [as handle_request] (/srv/app/releases/{v}/node_modules/express/lib/router/layer.js:95:5)\n"
    "    at process.processTicksAndRejections (node:internal/process/task_queues:{l}:{c})"
)
PYTHON = (
    "Traceback (most recent call last):\n"
    '  File "/srv/app/releases/{v}/venv/lib/python3.11/site-packages/flask/app.py", line {l}, in full_dispatch_request\n'
    "    rv = self.dispatch_request()\n"
    '  File "/srv/app/releases/{v}/app/views.py", line {c}, in checkout\n'
    "    total = order.amount / order.quantity\n"
    "ZeroDivisionError: division by zero for order {v}"
)
JAVA = (
    "java.lang.IllegalStateException: order {v} has no lines\n"
    "\tat com.shop.checkout.CheckoutService.total(CheckoutService.java:{l})\n"
    "\tat com.shop.checkout.CheckoutService$$EnhancerBySpringCGLIB$${h}.total(<generated>)\n"
    "\tat jdk.internal.reflect.GeneratedMethodAccessor{c}.invoke(Unknown Source)\n"
    "\tat com.shop.web.Api.lambda$post$0(Api.java:{c})\n"
    "\tat com.shop.web.Api$$Lambda${l}/0x000000080{c}a000.apply(Unknown Source) ~[app-{v}.jar:1.{l}.0]\n"
    "Caused by: java.lang.ArithmeticException: / by zero at line {l}\n"
    "\t... {c} more"
)

DEPLOY_A = {"host": "cdn1.shop.example", "h": "e4f5a6b7", "vite": "DiwrgTda", "v": "1700000000", "l": 417, "c": 2345}
DEPLOY_B = {
    "host": "d111abcdef8.cloudfront.net",
    "h": "aabbccdd",
    "vite": "C7d3BpnR",
    "v": "1700099999",
    "l": 9,
    "c": 17,
}


@pytest.mark.parametrize(
    "name,template,want",
    [
        (
            "chrome",
            CHROME,
            "ChunkLoadError\n(error: 417.chunk.js)\nat __webpack_require__.f.j (runtime-main.js)\nat runtime-main.js\n"
            "at Array.reduce (<anonymous>)\nat lazyCheckout (main.chunk.js)\nat async Promise.all (index 0)",
        ),
        ("firefox", FIREFOX, "ChunkLoadError\nlazyCheckout@417.chunk.js\nj@runtime-main.js\n@main.chunk.js"),
        (
            "safari",
            SAFARI,
            "TypeError\nrenderCart@index.js\nmap@[native code]\nglobal code@vendor.js\npromiseReactionJob@[native code]",
        ),
        (
            "node",
            NODE,
            "TypeError\nat checkout (server.js)\nat Layer.handle [as handle_request] (layer.js)\n"
            "at process.processTicksAndRejections (task_queues)",
        ),
        (
            "python",
            PYTHON,
            'ZeroDivisionError\nFile "app.py", in full_dispatch_request\nrv = self.dispatch_request()\n'
            'File "views.py", in checkout\ntotal = order.amount / order.quantity\nZeroDivisionError',
        ),
        (
            "java",
            JAVA,
            "java.lang.IllegalStateException\nat com.shop.checkout.CheckoutService.total(CheckoutService.java)\n"
            "at com.shop.checkout.CheckoutService$$EnhancerBySpringCGLIB$$.total(<generated>)\n"
            "at jdk.internal.reflect.GeneratedMethodAccessor.invoke(Unknown Source)\n"
            "at com.shop.web.Api.lambda$post$0(Api.java)\nat com.shop.web.Api$$Lambda.apply(Unknown Source)\n"
            "Caused by: java.lang.ArithmeticException\n... more",
        ),
    ],
)
def test_two_deploys_of_one_error_normalize_alike(name, template, want):
    a, b = template.format(**DEPLOY_A), template.format(**DEPLOY_B)
    assert a != b
    assert normalize_stack(a) == want
    assert normalize_stack(b) == want


def test_one_group_per_error_across_deploys_and_distinct_errors_apart():
    stacks, want = [], {}
    for k, template in enumerate((CHROME, FIREFOX, SAFARI, NODE, PYTHON, JAVA)):
        for d in range(5):  # five deploys, hosts and cache states
            deploy = {**(DEPLOY_A if d % 2 else DEPLOY_B), "l": 10 + d, "c": 100 + 7 * d, "v": str(1700000000 + d)}
            stacks.append(template.format(**deploy))
        want[fingerprint(normalize_stack(stacks[-1]))] = 5
    # a different function in the same bundle is a different error
    other = CHROME.replace("lazyCheckout", "lazyProfile").format(**DEPLOY_A)
    stacks.append(other)
    want[fingerprint(normalize_stack(other))] = 1
    t = pa.table(
        {
            "event_type": ["error"] * len(stacks),
            "ts": pa.array(range(len(stacks)), pa.timestamp("ms", tz="UTC")),
            "error_message": ["m"] * len(stacks),
            "error_stack": stacks,
        }
    )
    g = ErrorGrouper()
    g.process(t)
    groups = g.groups().to_pylist()
    assert {r["fingerprint"]: r["count"] for r in groups} == want
    assert sorted(r["error_type"] for r in groups) == sorted(
        ["ChunkLoadError"] * 3 + ["TypeError"] * 2 + ["ZeroDivisionError", "java.lang.IllegalStateException"]
    )
