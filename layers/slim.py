"""Build a third-party Lambda layer: install the pinned requirements for Lambda, slim the result safely, one
measured step at a time, and optionally compile .pyc.

Run by the layers' Makefiles (layers/serving, layers/serving-sklearn, layers/training; sam build, BuildMethod:
makefile) with Python 3.12, stdlib only; the whole recipe is here, so the slim report's sha256 of this file says
which recipe built a layer:

    python3.12 layers/slim.py <layer>/python --install --requirements requirements.txt --report <file.json> \
        [--pyc none|all|imported --pyc-imports MODULE ...]

--install runs `pip install --target <layer>/python` for Lambda (manylinux x86_64 wheels, CPython 3.12, no
.pyc), resolving dependencies (no --no-deps), so pip still rejects pins that contradict each other; the check
below then fails the build unless exactly the pinned distributions were installed.

What it removes is what no import needs at run time (see STEPS). Everything else is checked, not assumed:
- the installed distributions are exactly the pinned ones (no unpinned extras, no boto3/botocore from pip);
- a module under a removed tests/ folder that kept code imports is kept (numpy once imported
  numpy/_core/tests/_natype.py at run time);
- `strip` touches only the packages' own ELF files, never the vendored `<package>.libs/` (stripping those breaks
  them: "ELF load command address/offset not page-aligned"); every stripped file is dlopen()ed before and after,
  and one that stops loading is put back unstripped;
- no removed shared library is NEEDED by an ELF file left in the layer.
The proof that the slimmed layers still do the real work is tests/build/test_bundles.py.

--pyc writes .pyc next to the sources with `python -m compileall --invalidation-mode unchecked-hash`: /opt is
read-only in Lambda, so Python cannot cache bytecode there, and the deployment zip does not keep mtimes exactly,
so timestamp-checked .pyc would be stale; unchecked-hash .pyc are used without looking at the source at all (they
are also byte-for-byte reproducible). They must be built by the runtime's Python version (3.12). `all` compiles
every module; `imported` only the modules that importing --pyc-imports loads (measured in a fresh interpreter
that sees only the layer): the modules a cold start needs get their .pyc, the rest of a large library does not
cost the layer's size budget.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import mmap
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

MiB = 1 << 20
# Where the layer's python/ folder is mounted in Lambda: tracebacks and __file__ of the .pyc name these paths.
LAMBDA_SITE = "/opt/python"
# The Lambda runtime provides them; a second copy in a layer only costs ~26 MiB and shadows the runtime's.
RUNTIME_PROVIDED = frozenset({"boto3", "botocore", "s3transfer"})

# Test suites: folders named `tests` inside a package, and these (relative to the layer's python/ folder).
# `testing` folders are NOT removed: they are public modules imported at run time (numpy.testing; sklearn's
# externals/array_api_extra/__init__.py does `from . import testing`).
TEST_DIR_NAMES = frozenset({"tests"})
EXTRA_TEST_DIRS = (
    "joblib/test",  # joblib's own test suite
    "onnx/backend/test/data",  # ONNX conformance models and inputs for backend authors (~10 MiB of .pb)
)
# Sources and headers for compiling extensions against these packages; nothing reads them at run time.
SOURCE_SUFFIXES = frozenset({".pyx", ".pxd", ".pxi", ".c", ".cc", ".cpp", ".cxx", ".h", ".hh", ".hpp", ".f", ".f90"})
HEADER_DIR_NAMES = frozenset({"include"})
# Shared libraries that no Python module of their package loads; kept only for C/C++ consumers. Each is removed
# only if no ELF file left in the layer NEEDs it (checked below), and the predict test proves the runtime.
UNLINKED_LIBRARIES = (
    # ONNX Runtime's C API library (~33 MiB). The Python binding, onnxruntime_pybind11_state*.so, is linked
    # statically and NEEDs only libc/libstdc++; no .py file of onnxruntime opens libonnxruntime.so.
    "onnxruntime/capi/libonnxruntime.so*",
)


@dataclass
class Step:
    name: str
    removed_files: int = 0
    saved_bytes: int = 0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "step": self.name,
            "files": self.removed_files,
            "saved_mib": round(self.saved_bytes / MiB, 2),
            "notes": self.notes,
        }


# ------------------------------------------------------------------------------------------------ helpers


def tree_bytes(path: Path) -> int:
    """Sum of the sizes of the regular files under `path` (what the unzipped layer occupies)."""
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    return sum(
        (Path(d) / f).lstat().st_size for d, _, files in os.walk(path) for f in files if not (Path(d) / f).is_symlink()
    )


def count_files(path: Path) -> int:
    if path.is_symlink() or path.is_file():
        return 1
    return sum(len(files) for _, _, files in os.walk(path))


def package_dirs(site: Path) -> list[Path]:
    """Top-level import packages of the layer: not dist-info metadata (licences live there), not `<x>.libs`."""
    return sorted(
        p
        for p in site.iterdir()
        if p.is_dir() and not p.name.endswith((".dist-info", ".data", ".libs")) and p.name not in {"bin", "__pycache__"}
    )


def remove(paths: Iterable[Path], step: Step, site: Path) -> None:
    for path in sorted(set(paths)):
        if not path.exists() and not path.is_symlink():
            continue  # inside a folder removed earlier in this step
        step.removed_files += count_files(path)
        step.saved_bytes += tree_bytes(path)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def is_elf(path: Path) -> bool:
    if path.is_symlink() or not path.is_file():
        return False
    with path.open("rb") as handle:
        return handle.read(4) == b"\x7fELF"


def elf_dynamic(path: Path) -> tuple[str | None, list[str]]:
    """(SONAME, NEEDED entries) of a 64-bit little-endian ELF file, read from its .dynamic section."""
    with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
            return None, []
        shoff = struct.unpack_from("<Q", data, 0x28)[0]
        shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
        # sh_name, sh_type, sh_flags, sh_addr, sh_offset, sh_size, sh_link, sh_info, sh_addralign, sh_entsize
        sections = [struct.unpack_from("<IIQQQQIIQQ", data, shoff + i * shentsize) for i in range(shnum)]
        for section in sections:
            if section[1] != 6:  # SHT_DYNAMIC
                continue
            strtab_offset = sections[section[6]][4]
            soname, needed = None, []
            for entry in range(section[4], section[4] + section[5], 16):
                tag, value = struct.unpack_from("<qQ", data, entry)
                if tag == 0:  # DT_NULL
                    break
                if tag == 1:  # DT_NEEDED
                    needed.append(_c_string(data, strtab_offset + value))
                elif tag == 14:  # DT_SONAME
                    soname = _c_string(data, strtab_offset + value)
            return soname, needed
    return None, []


def _c_string(data: mmap.mmap, start: int) -> str:
    return bytes(data[start : data.find(b"\0", start)]).decode()


def unresolved_needed(site: Path) -> set[tuple[str, str]]:
    """(file, library) pairs where an ELF file NEEDs a library that is not in the layer (most are the system's:
    libc, libstdc++...). Compared before/after slimming: a new pair means slimming removed something needed."""
    elves = [p for p in site.rglob("*") if is_elf(p)]
    provided: set[str] = set()
    dynamic = {}
    for elf in elves:
        soname, needed = elf_dynamic(elf)
        dynamic[elf] = needed
        provided.add(elf.name)
        if soname:
            provided.add(soname)
    return {
        (str(elf.relative_to(site)), lib) for elf, needed in dynamic.items() for lib in needed if lib not in provided
    }


def dlopen_failures(paths: list[Path]) -> dict[str, str]:
    """dlopen() each file in a fresh interpreter (the build's Python 3.12): {path: error} for those that fail."""
    if not paths or sys.platform != "linux" or os.uname().machine != "x86_64":
        return {}
    script = (
        "import ctypes, json, sys\n"
        "failed = {}\n"
        "for path in sys.argv[1:]:\n"
        "    try:\n"
        "        ctypes.CDLL(path)\n"
        "    except OSError as error:\n"
        "        failed[path] = str(error)\n"
        "print(json.dumps(failed))\n"
    )
    result = subprocess.run(  # noqa: S603 - our own interpreter and script, no shell
        [sys.executable, "-I", "-c", script, *map(str, paths)], capture_output=True, text=True, check=True
    )
    failures: dict[str, str] = json.loads(result.stdout)
    return failures


def walk_dirs(site: Path, skip: Callable[[Path], bool] = lambda _: False) -> Iterator[Path]:
    for top in package_dirs(site):
        for dirpath, dirnames, _ in os.walk(top):
            for name in dirnames:
                path = Path(dirpath) / name
                if not skip(path):
                    yield path


# ------------------------------------------------------------------------------------------------ checks


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_distributions(site: Path) -> dict[str, str]:
    found = {}
    for metadata in site.glob("*.dist-info/METADATA"):
        fields = dict(
            line.split(": ", 1) for line in metadata.read_text().split("\n\n", 1)[0].splitlines() if ": " in line
        )
        found[normalise(fields["Name"])] = fields["Version"]
    return found


def pinned_requirements(path: Path) -> dict[str, str]:
    pins = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        name, sep, version = line.partition("==")
        if not sep or any(c in version for c in ",;<>!~ "):
            raise SystemExit(f"slim: {path}: {line!r} is not an exact `name==version` pin")
        pins[normalise(name.split("[", 1)[0].strip())] = version.strip()
    return pins


def check_distributions(site: Path, requirements: Path) -> None:
    """Fail the build unless pip installed exactly the pinned distributions: no unpinned transitive dependency
    slipped in (requirements files pin the whole closure), none is missing, none the runtime provides."""
    installed = installed_distributions(site)
    pins = pinned_requirements(requirements)
    problems = []
    if extra := sorted(set(installed) - set(pins)):
        problems.append(f"installed but not pinned (pin them in requirements.txt and the layer file): {extra}")
    if missing := sorted(set(pins) - set(installed)):
        problems.append(f"pinned but not installed: {missing}")
    if drift := {n: (pins[n], v) for n, v in installed.items() if n in pins and pins[n] != v}:
        problems.append(f"installed versions differ from the pins (pin, installed): {drift}")
    if runtime := sorted(RUNTIME_PROVIDED & set(installed)):
        problems.append(f"provided by the Lambda runtime, must not be in a layer: {runtime}")
    if problems:
        raise SystemExit("slim: " + "\n      ".join(problems))


IMPORT_RE = re.compile(r"^[ \t]*(?:from[ \t]+([\w.]+)[ \t]+import[ \t]+([\w, \t()]+)|import[ \t]+([\w.]+))", re.M)


def modules_imported_from_tests(site: Path, test_dirs: list[Path]) -> set[Path]:
    """Files under the test folders about to be removed that code outside them imports."""
    test_dirs_set = set(test_dirs)
    wanted: set[Path] = set()

    def in_tests(path: Path) -> bool:
        return any(parent in test_dirs_set for parent in path.parents)

    for top in package_dirs(site):
        for source in top.rglob("*.py"):
            if in_tests(source):
                continue
            for match in IMPORT_RE.finditer(source.read_text(errors="replace")):
                module = match.group(1) or match.group(3)
                names = [n.strip() for n in re.split(r"[,()\s]+", match.group(2) or "") if n.strip()]
                if module.startswith("."):  # relative: from the source's package, one level up per extra dot
                    level = len(module) - len(module.lstrip("."))
                    package = source.parent.relative_to(site).parts[
                        : len(source.parent.relative_to(site).parts) - level + 1
                    ]
                    module = ".".join([*package, *filter(None, module.lstrip(".").split("."))])
                for dotted in [module, *(f"{module}.{n}" for n in names if match.group(1))]:
                    base = site.joinpath(*dotted.split("."))
                    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
                        if candidate.is_file() and in_tests(candidate):
                            wanted.add(candidate)
    return wanted


# ------------------------------------------------------------------------------------------------ steps


def step_pip_leftovers(site: Path, step: Step) -> None:
    """bin/ holds console scripts whose #! names the build machine's Python; __pycache__ from pip is
    timestamp-checked (and the Makefiles install with --no-compile anyway)."""
    remove([site / "bin"] if (site / "bin").exists() else [], step, site)
    remove(site.rglob("__pycache__"), step, site)


def step_tests(site: Path, step: Step) -> None:
    test_dirs = [p for p in walk_dirs(site) if p.name in TEST_DIR_NAMES]
    test_dirs += [site / rel for rel in EXTRA_TEST_DIRS if (site / rel).is_dir()]
    test_dirs = [d for d in test_dirs if not any(parent in test_dirs for parent in d.parents)]
    keep = modules_imported_from_tests(site, test_dirs)
    # A kept module keeps its package chain (__init__.py files) up to the test folder.
    for module in list(keep):
        for parent in module.parents:
            if (parent / "__init__.py").is_file():
                keep.add(parent / "__init__.py")
            if parent in test_dirs:
                break
    if keep:
        step.notes.append(
            "kept (imported by code outside tests): " + ", ".join(str(k.relative_to(site)) for k in sorted(keep))
        )
    for test_dir in test_dirs:
        kept_here = [k for k in keep if test_dir in k.parents]
        if not kept_here:
            remove([test_dir], step, site)
            continue
        doomed = [p for p in test_dir.rglob("*") if p.is_file() and p not in kept_here]
        remove(doomed, step, site)
        for folder in sorted((p for p in test_dir.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
            if not any(folder.iterdir()):
                folder.rmdir()
    step.notes.append(f"{len(test_dirs)} folders")


def step_sources(site: Path, step: Step) -> None:
    headers = [p for p in walk_dirs(site) if p.name in HEADER_DIR_NAMES]
    remove(headers, step, site)
    sources = [p for top in package_dirs(site) for p in top.rglob("*") if p.suffix in SOURCE_SUFFIXES and p.is_file()]
    remove(sources, step, site)


def step_stubs(site: Path, step: Step) -> None:
    remove((p for top in package_dirs(site) for p in top.rglob("*.pyi")), step, site)


def step_strip(site: Path, step: Step) -> None:
    strip = shutil.which("strip")
    if strip is None:
        step.notes.append("`strip` not found (binutils): skipped")
        return
    # The packages' own ELF files only: package_dirs() leaves out numpy.libs/, scipy.libs/... (auditwheel's
    # patchelf-ed copies, which `strip` breaks).
    elves = [p for top in package_dirs(site) for p in top.rglob("*") if ".so" in p.name and is_elf(p)]
    failing_before = dlopen_failures(elves)
    loadable_before = [p for p in elves if str(p) not in failing_before]
    with tempfile.TemporaryDirectory() as backup_dir:
        backups = {}
        for index, elf in enumerate(loadable_before):
            backups[elf] = Path(backup_dir) / str(index)
            shutil.copy2(elf, backups[elf])
        for elf in elves:
            before = elf.stat().st_size
            subprocess.run([strip, "--strip-unneeded", str(elf)], check=True)  # noqa: S603 - no shell
            step.saved_bytes += before - elf.stat().st_size
        for path, error in dlopen_failures(loadable_before).items():
            elf = Path(path)
            step.saved_bytes -= backups[elf].stat().st_size - elf.stat().st_size
            shutil.copy2(backups[elf], elf)
            step.notes.append(f"kept unstripped {elf.relative_to(site)}: stripped, it failed to load: {error}")
    step.notes.append(f"{len(elves)} ELF files")


def step_unlinked_libraries(site: Path, step: Step) -> None:
    candidates = [p for pattern in UNLINKED_LIBRARIES for p in site.glob(pattern) if p.is_file()]
    if not candidates:
        return
    remaining = [p for p in site.rglob("*") if p not in candidates and is_elf(p)]
    needed = {lib for p in remaining for lib in elf_dynamic(p)[1]}
    for candidate in candidates:
        soname = elf_dynamic(candidate)[0]
        names = {candidate.name} | ({soname} if soname else set())
        if users := names & needed:
            step.notes.append(f"kept {candidate.relative_to(site)}: an ELF file in the layer NEEDs {sorted(users)}")
            continue
        remove([candidate], step, site)


STEPS: tuple[tuple[str, Callable[[Path, Step], None]], ...] = (
    ("pip leftovers: bin/, __pycache__/", step_pip_leftovers),
    ("test suites: */tests/, " + ", ".join(EXTRA_TEST_DIRS), step_tests),
    ("C/Cython sources and headers: include/, " + " ".join(sorted(SOURCE_SUFFIXES)), step_sources),
    ("type stubs: *.pyi", step_stubs),
    ("strip --strip-unneeded the packages' own *.so (never *.libs/)", step_strip),
    ("unlinked libraries: " + ", ".join(UNLINKED_LIBRARIES), step_unlinked_libraries),
)


def compile_pyc(site: Path, step: Step, files: list[Path] | None = None) -> None:
    """Compile .pyc for every module under `site`, or only for `files`."""
    before = tree_bytes(site)
    command = [
        sys.executable,
        "-m",
        "compileall",
        "-q",
        "-j0",
        "--invalidation-mode",
        "unchecked-hash",
        # Record /opt/python/... as the source path (what tracebacks show in Lambda), not the build folder.
        "-s",
        str(site),
        "-p",
        LAMBDA_SITE,
    ]
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as listing:
        if files is None:
            command.append(str(site))
        else:
            listing.write("".join(f"{path}\n" for path in files))
            listing.flush()
            command += ["-i", listing.name]
        result = subprocess.run(command, capture_output=True, text=True, check=False)  # noqa: S603 - no shell
    if result.returncode != 0:
        raise SystemExit(f"slim: compileall failed:\n{result.stdout}\n{result.stderr}")
    step.saved_bytes = before - tree_bytes(site)
    step.removed_files = -sum(1 for _ in site.rglob("*.pyc"))


def imported_sources(site: Path, modules: list[str]) -> list[Path]:
    """The source files under `site` that importing `modules` loads, in a fresh `python -I -S -B` that sees only
    the layer (plus the standard library)."""
    script = (
        "import importlib, json, sys\n"
        "site = sys.argv[1]\n"
        "sys.path.insert(0, site)\n"
        "for name in sys.argv[2:]:\n"
        "    importlib.import_module(name)\n"
        "files = [getattr(m, '__file__', None) for m in list(sys.modules.values())]\n"
        "print(json.dumps(sorted({f for f in files if f and f.startswith(site) and f.endswith('.py')})))\n"
    )
    result = subprocess.run(  # noqa: S603 - our own interpreter and script, no shell
        [sys.executable, "-I", "-S", "-B", "-c", script, str(site), *modules], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise SystemExit(f"slim: importing {modules} from the layer failed:\n{result.stderr[-3000:]}")
    return [Path(path) for path in json.loads(result.stdout.strip().splitlines()[-1])]


def install(site: Path, requirements: Path) -> None:
    """pip install the pinned requirements for Lambda (manylinux x86_64, CPython 3.12) into `site`."""
    if site.exists():
        shutil.rmtree(site)
    command = [
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-compile",
        "--only-binary=:all:",
        "--platform",
        "manylinux_2_28_x86_64",
        "--platform",
        "manylinux2014_x86_64",
        "--python-version",
        "3.12",
        "--implementation",
        "cp",
        "--target",
        str(site),
        "--requirement",
        str(requirements),
        "--progress-bar",
        "off",
        "--disable-pip-version-check",
        "--root-user-action=ignore",
    ]
    print("slim: " + " ".join(command), flush=True)
    subprocess.run(command, check=True)  # noqa: S603 - our own interpreter, fixed arguments, no shell


# ------------------------------------------------------------------------------------------------ main


def top_entries(site: Path, count: int = 10) -> list[dict[str, object]]:
    sizes = [(tree_bytes(p), p.name) for p in site.iterdir()]
    return [{"entry": name, "mib": round(size / MiB, 2)} for size, name in sorted(sizes, reverse=True)[:count]]


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("site", type=Path, help="the layer's python/ folder, as pip install --target made it")
    parser.add_argument("--requirements", type=Path, required=True, help="the pinned requirements pip installed")
    parser.add_argument("--report", type=Path, help="write the measurements here as JSON")
    parser.add_argument("--install", action="store_true", help="pip install the requirements into `site` first")
    parser.add_argument(
        "--pyc",
        choices=("none", "all", "imported"),
        default="none",
        help="compile unchecked-hash .pyc after slimming: no module, every module, or those --pyc-imports load",
    )
    parser.add_argument("--pyc-imports", nargs="+", default=[], metavar="MODULE", help="with --pyc imported")
    args = parser.parse_args(argv)
    site: Path = args.site.resolve()
    if sys.version_info[:2] != (3, 12):
        raise SystemExit(f"slim: run me with Python 3.12 (the Lambda runtime), not {sys.version.split()[0]}")
    if (args.pyc == "imported") != bool(args.pyc_imports):
        raise SystemExit("slim: --pyc imported needs --pyc-imports, and --pyc-imports needs --pyc imported")

    started = time.perf_counter()
    if args.install:
        install(site, args.requirements)
    if not site.is_dir():
        raise SystemExit(f"slim: {site} is not a folder")
    check_distributions(site, args.requirements)
    installed_bytes = tree_bytes(site)
    unresolved_before = unresolved_needed(site)
    steps = []
    for name, action in STEPS:
        step = Step(name)
        action(site, step)
        steps.append(step)
    if new := unresolved_needed(site) - unresolved_before:
        raise SystemExit(f"slim: slimming removed libraries still NEEDED by: {sorted(new)}")
    slimmed_bytes = tree_bytes(site)
    if args.pyc == "all":
        step = Step("compile .pyc (unchecked-hash) for every module")
        compile_pyc(site, step)
        steps.append(step)
    elif args.pyc == "imported":
        sources = imported_sources(site, args.pyc_imports)
        step = Step(f"compile .pyc (unchecked-hash) for the {len(sources)} modules that importing these loads")
        step.notes.append(" ".join(args.pyc_imports))
        compile_pyc(site, step, sources)
        steps.append(step)
    final_bytes = tree_bytes(site)

    # Shipped with the layer (/opt/slim-report/<layer>.json): nothing in it varies between identical builds.
    report = {
        "python": sys.version.split()[0],
        "slim_py_sha256": file_sha256(Path(__file__)),
        "requirements_sha256": file_sha256(args.requirements),
        "pyc": args.pyc,
        "pyc_imports": args.pyc_imports,
        "installed_mib": round(installed_bytes / MiB, 2),
        "slimmed_mib": round(slimmed_bytes / MiB, 2),
        "final_mib": round(final_bytes / MiB, 2),
        "steps": [s.as_dict() for s in steps],
        "top": top_entries(site),
    }
    seconds = time.perf_counter() - started
    print(f"slim: {site}: {installed_bytes / MiB:.1f} MiB installed -> {final_bytes / MiB:.1f} MiB in {seconds:.0f} s")
    for step in steps:
        print(f"  {step.saved_bytes / MiB:+8.2f} MiB saved  {step.name}")
        for note in step.notes:
            print(f"        {note[:300]}")
    if args.report:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
