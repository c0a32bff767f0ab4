"""The Lambda layers' requirements files repeat the top-level pins: one pinned environment everywhere."""

from __future__ import annotations

import re
from importlib.metadata import PackageNotFoundError, distribution
from pathlib import Path

import pytest
from packaging.requirements import Requirement

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
TOP_LEVEL = ROOT / "requirements.txt"
LAYER_FILES = {
    "serving": ROOT / "layers" / "serving" / "requirements.txt",
    "serving-sklearn": ROOT / "layers" / "serving-sklearn" / "requirements.txt",
    "training": ROOT / "layers" / "training" / "requirements.txt",
    "shared": ROOT / "layers" / "shared" / "requirements.txt",
}

SERVING = {
    "numpy",
    "onnxruntime",
    "aws-lambda-powertools",
    "pydantic",
    "pydantic-core",
    "annotated-types",
    "typing-inspection",
    "typing-extensions",
    "orjson",
    "msgspec",
}
TRAINING_ONLY = {
    "scikit-learn",
    "scipy",
    "joblib",
    "threadpoolctl",
    "pandas",
    "python-dateutil",
    "six",
    "tzdata",
    "skl2onnx",
    "onnx",
    "ml-dtypes",
    "protobuf",
    "fastparquet",
    "cramjam",
    "fsspec",
    "packaging",
}
# The scikit-learn serving runtime: instead of ONNX Runtime, what unpickling and running a pipeline needs.
SERVING_SKLEARN = (SERVING - {"onnxruntime"}) | {"scikit-learn", "scipy", "joblib", "threadpoolctl", "pandas"}
REQUIRED = {
    "serving": SERVING,
    "serving-sklearn": SERVING_SKLEARN,
    "training": (SERVING - {"onnxruntime"}) | TRAINING_ONLY,
    "shared": set(),
}
# Provided by the Lambda runtime: shipping them would only add ~26 MiB and a second, different copy.
RUNTIME_PROVIDED = {"boto3", "botocore", "s3transfer"}
# Transitive dependencies that `sam build` installs but requirements.txt does not pin yet (versions seen in
# the build: flatbuffers 25.12.19, cloudpickle 3.1.3, narwhals 2.29.0). Pin them in requirements.txt, add them
# to the layer file, then remove them here.
NOT_YET_PINNED: dict[str, set[str]] = {
    "serving": set(),
    "serving-sklearn": set(),
    "training": set(),
    "shared": set(),
}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_requirements(path: Path) -> list[Requirement]:
    requirements = []
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            requirements.append(Requirement(line))
    return requirements


def pins(requirements: list[Requirement]) -> dict[str, str]:
    return {normalise(r.name): str(r.specifier) for r in requirements}


def dependency_closure(names: set[str]) -> set[str]:
    """Every distribution that installing `names` pulls in, read from the installed metadata (Linux, Python 3.12,
    no extras: what the Lambda build resolves)."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = distribution(name).requires or []
        except PackageNotFoundError:
            pytest.fail(f"{name} is not installed: install requirements.txt into this environment")
        for spec in requires:
            requirement = Requirement(spec)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(normalise(requirement.name))
    return seen


@pytest.fixture(scope="module")
def top_level() -> dict[str, str]:
    return pins(read_requirements(TOP_LEVEL))


def test_normalise_treats_case_dash_and_underscore_alike() -> None:
    # Given spellings of one name as pip accepts them
    # When normalising
    # Then they are one name
    assert {normalise(n) for n in ("typing_extensions", "Typing-Extensions", "typing.extensions")} == {
        "typing-extensions"
    }


@pytest.mark.parametrize("layer", sorted(LAYER_FILES))
def test_layer_requirements_are_exact_pins(layer: str) -> None:
    # Given a layer's requirements file
    requirements = read_requirements(LAYER_FILES[layer])
    # When looking at each requirement's specifier
    # Then every one is a single exact == pin without markers, and no package is listed twice
    for requirement in requirements:
        specifiers = list(requirement.specifier)
        assert len(specifiers) == 1, f"{layer}: {requirement} is not pinned with =="
        assert specifiers[0].operator == "==", f"{layer}: {requirement} is not pinned with =="
        assert requirement.marker is None, f"{layer}: {requirement} has an environment marker"
    names = [normalise(r.name) for r in requirements]
    assert len(names) == len(set(names)), f"{layer}: a package is listed twice"


@pytest.mark.parametrize("layer", sorted(LAYER_FILES))
def test_layer_pins_equal_the_top_level_pins(layer: str, top_level: dict[str, str]) -> None:
    # Given a layer's pins and the top-level requirements.txt
    layer_pins = pins(read_requirements(LAYER_FILES[layer]))
    # When comparing each layer pin with the top-level pin of the same package
    drift = {name: (pin, top_level.get(name)) for name, pin in layer_pins.items() if top_level.get(name) != pin}
    # Then they are equal (a package missing from requirements.txt is drift too)
    assert drift == {}, f"{layer}: (layer pin, top-level pin) differ: {drift}"


@pytest.mark.parametrize("layer", sorted(LAYER_FILES))
def test_layer_has_every_package_it_needs(layer: str) -> None:
    # Given a layer's requirements
    names = set(pins(read_requirements(LAYER_FILES[layer])))
    # When comparing with the packages that layer must provide
    missing = REQUIRED[layer] - names
    # Then none is missing
    assert missing == set(), f"{layer}: missing {sorted(missing)}"


@pytest.mark.parametrize("layer", sorted(LAYER_FILES))
def test_layer_does_not_ship_what_the_runtime_provides(layer: str) -> None:
    # Given a layer's requirements
    names = set(pins(read_requirements(LAYER_FILES[layer])))
    # When looking for the AWS SDK
    # Then it is absent: the Lambda runtime provides it
    assert names & RUNTIME_PROVIDED == set()


def test_sklearn_serving_layer_has_no_onnx_and_no_training_tools() -> None:
    # Given the scikit-learn serving layer's requirements (it replaces the ONNX one, it is not added to it)
    names = set(pins(read_requirements(LAYER_FILES["serving-sklearn"])))
    # Then it has no ONNX Runtime and none of training's own tools (conversion, Parquet)
    assert names & {"onnxruntime", "skl2onnx", "onnx", "fastparquet", "protobuf"} == set()


def test_serving_layer_has_no_training_packages() -> None:
    # Given the serving layer's requirements
    names = set(pins(read_requirements(LAYER_FILES["serving"])))
    # When looking for training-only libraries
    # Then there are none: prediction runs ONNX, not scikit-learn
    assert names & {"scikit-learn", "scipy", "pandas", "skl2onnx", "fastparquet", "joblib"} == set()


@pytest.mark.parametrize("layer", ["serving", "serving-sklearn", "training"])
def test_layer_pins_its_transitive_dependencies(layer: str) -> None:
    # Given a layer's pins (sam build resolves their dependencies too, and takes the newest unpinned version)
    names = set(pins(read_requirements(LAYER_FILES[layer])))
    # When following the installed packages' dependencies
    closure = dependency_closure(names)
    # Then every dependency that lands in the layer is pinned in it (or on the known list still to pin)
    unpinned = closure - names - NOT_YET_PINNED[layer]
    assert unpinned == set(), f"{layer}: add pins for {sorted(unpinned)} (requirements.txt and the layer file)"
    # And the known list holds nothing that is already pinned or no longer needed
    assert NOT_YET_PINNED[layer] <= closure - names
