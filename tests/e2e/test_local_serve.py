"""`make serve` (devtools/serve.py): any model of a store, locally, with a banner that calls that model."""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
import requests

from devtools.serve import ServeError, plan
from sklambda.store import ModelStore
from tests.conftest import REPO

pytestmark = pytest.mark.e2e


@pytest.fixture
def two_models(local_store_copy: Path) -> ModelStore:
    """The sample model, and "wine": a model of its own (a copy of the sample's version under another name, its
    golden rows in reverse order, so its first example row is not the sample's)."""
    store = ModelStore.from_uri(str(local_store_copy))
    manifest = store.manifest("penguins", 1)
    files = {file: store.artifact(manifest, file) for file in manifest.artifacts}
    golden = manifest.golden
    golden = replace(
        golden,
        instances=golden.instances[::-1],
        predictions=golden.predictions[::-1],
        probabilities=None if golden.probabilities is None else golden.probabilities[::-1],
    )
    wine = manifest.model_copy(update={"name": "wine", "artifacts": {}, "manifest_sha256": None, "golden": golden})
    published = store.publish(wine, files)
    store.promote("wine", published.version, by="test", reason="a second model")
    return store


def test_several_models_and_none_named_says_how_to_choose(two_models: ModelStore) -> None:
    with pytest.raises(ServeError, match=r"several models \(penguins, wine\): choose one with MODEL_NAME"):
        plan(two_models.uri, None, None, "champion")
    with pytest.raises(ServeError, match="model 'nope' has no 'champion' version"):
        plan(two_models.uri, "nope", None, "champion")


def test_the_named_model_gets_its_own_example_and_data(two_models: ModelStore) -> None:
    wine = plan(two_models.uri, "wine", "wine.csv", "champion")
    assert (wine.name, wine.version, wine.data_uri) == ("wine", 1, "wine.csv")
    assert wine.example == two_models.manifest("penguins", 1).golden.instances[-1]
    # The sample's own data is the default only for the sample model
    assert plan(two_models.uri, "wine", None, "champion").data_uri is None
    assert str(plan(two_models.uri, "penguins", None, "champion").data_uri).endswith("penguins.csv")


def test_model_name_serves_that_model_with_a_banner_for_it(two_models: ModelStore, tmp_path: Path) -> None:
    # Given a store of two models, and MODEL_NAME=wine
    environment = dict(os.environ, MODEL_NAME="wine", MODEL_STORE_URI=two_models.uri, PYTHONUNBUFFERED="1")
    environment["PYTHONPATH"] = os.pathsep.join([str(REPO / "layers" / "shared"), str(REPO)])
    command = [sys.executable, "-m", "devtools.serve", "--port", "0", "--lambda-port", "-1"]
    # When `make serve`'s module starts
    server = subprocess.Popen(
        command, cwd=REPO, env=environment, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    try:
        lines = []
        deadline = time.monotonic() + 120
        assert server.stdout is not None
        while time.monotonic() < deadline:
            line = server.stdout.readline()
            lines.append(line)
            if line.strip().startswith("curl "):
                break
        banner = "".join(lines)
        # Then the banner names wine and its curl sends one of wine's own rows
        url = re.search(r"Serving wine v1 from .* at (http://127\.0\.0\.1:\d+)\.", banner)
        assert url is not None, banner
        curl = shlex.split(lines[-1])
        body = json.loads(curl[curl.index("-d") + 1])
        assert body["instances"] == [two_models.manifest("penguins", 1).golden.instances[-1]]
        # And that curl, sent, is answered by wine
        reply = requests.post(f"{url.group(1)}/predict", json=body, timeout=60)
        assert reply.status_code == 200, reply.text
        assert reply.json()["model"] == {"name": "wine", "version": 1}
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
