"""The benchmark's own machinery: the layers a function gets for given template parameters, the load generator's
counting, and the table."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from benchmarks.bundles import _chosen
from benchmarks.load import generate
from benchmarks.report import Row, render

pytestmark = pytest.mark.unit

TEMPLATE: dict[str, Any] = {
    "Parameters": {"ServingRuntime": {"Default": "onnx"}},
    "Conditions": {
        "UsesSklearnRuntime": {"Fn::Equals": [{"Ref": "ServingRuntime"}, "sklearn"]},
        "UsesOnnxRuntime": {"Fn::Not": [{"Condition": "UsesSklearnRuntime"}]},
    },
}
CHOICE = {"Fn::If": ["UsesOnnxRuntime", {"Ref": "ServingDepsLayer"}, {"Ref": "ServingSklearnDepsLayer"}]}


@pytest.mark.parametrize(
    ("parameters", "layer"),
    [({}, "ServingDepsLayer"), ({"ServingRuntime": "sklearn"}, "ServingSklearnDepsLayer")],
)
def test_conditional_layers_follow_the_parameters(parameters: dict[str, str], layer: str) -> None:
    # Given a layer chosen by a condition on a parameter
    # When resolving it with the parameter's default, or a value given
    # Then the layer is the one the template gives that deployment
    assert _chosen(CHOICE, TEMPLATE, parameters) == layer
    assert _chosen({"Ref": "SharedCodeLayer"}, TEMPLATE, parameters) == "SharedCodeLayer"


class _EveryThirdFails(BaseHTTPRequestHandler):
    count = 0
    lock = threading.Lock()

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        with self.lock:
            type(self).count += 1
            status = 500 if self.count % 3 == 0 else 200
        self.send_response(status)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _EveryThirdFails)
    _EveryThirdFails.protocol_version = "HTTP/1.1"  # keep-alive, as the load generator uses
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_port}/predict"
    httpd.shutdown()
    httpd.server_close()


def test_load_generator_counts_requests_and_errors(server: str) -> None:
    # Given a server that answers 500 to every third request
    # When 4 clients send 30 requests
    result = generate(server, b'{"instances": []}', concurrency=4, requests=30, limit_seconds=30)
    # Then all 30 were sent, and the 10 failures are errors
    assert result["requests"] == 30
    assert result["errors"] == 10
    assert result["statuses"] == {"200": 20, "500": 10}
    assert 0 < result["p50"] <= result["p99"]


def test_load_generator_stops_at_its_time_limit(server: str) -> None:
    # Given a time limit far shorter than the requests asked for would take
    # When loading
    result = generate(server, b"{}", concurrency=2, requests=10**9, limit_seconds=0.3)
    # Then it stopped, having sent some
    assert 0 < result["requests"] < 10**9
    assert result["seconds"] < 5


def test_the_table_is_markdown() -> None:
    # Given two rows
    rows = [Row("warm", "single row", "91.9 us", "bare 21.9 us", "+70.0 us", "<= +100 us", "met"), Row("x", "y", "z")]
    # When rendering them
    lines = render(rows).splitlines()
    # Then a header, a separator with numbers right-aligned, and one line per row, all with the same columns
    assert lines[0].startswith("| section")
    assert lines[1].startswith("|--")
    assert ":|" in lines[1]
    assert len(lines) == 4
    assert {line.count("|") for line in lines} == {8}
