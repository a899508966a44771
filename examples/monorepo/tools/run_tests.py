"""A small test runner on the standard library alone, for machines without pytest.

It runs tests written for pytest's plain style: every `test_*` function of every
`tests/**/test_*.py` module (and `test_*` methods of `Test*` classes), each checked with plain
`assert` statements. Two pytest fixtures are provided, by parameter name: `tmp_path` (a fresh
`pathlib.Path` directory under `$TMPDIR`) and `monkeypatch` (`setenv`, `delenv`, `setattr`,
`delattr`, `setitem`, `delitem`, `chdir`, undone after the test). A test asking for any other
fixture is an error.

Usage, from a package directory (the directory that holds the importable package and `tests/`):

    python3 -B run_tests.py [--junit-xml FILE] [PATH ...]      (default PATH: tests)

Prints one line per test and a summary; `--junit-xml` also writes a JUnit-style XML report (the
format CI systems read). Exit status: 0 when every test passed, 1 when one failed or errored, or
when no test was found (an empty suite is more likely a mistake than a success); 2 on bad usage.
The package directory is put first on `sys.path`, as `python3 -m pytest` does, and no
`__pycache__` is written.
"""

import argparse
import importlib.util
import inspect
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
import xml.etree.ElementTree as ET
from pathlib import Path

sys.dont_write_bytecode = True

_NOTSET = object()


class MonkeyPatch:
    """The subset of pytest's `monkeypatch` fixture the example's tests use, and its siblings."""

    def __init__(self):
        self._undo = []

    def setenv(self, name, value, prepend=None):
        value = str(value)
        old = os.environ.get(name)
        if prepend and old is not None:
            value = value + prepend + old
        self._undo.append(lambda: _restore_env(name, old))
        os.environ[name] = value

    def delenv(self, name, raising=True):
        if name not in os.environ:
            if raising:
                raise KeyError(name)
            return
        old = os.environ[name]
        self._undo.append(lambda: _restore_env(name, old))
        del os.environ[name]

    def setattr(self, target, name, value=_NOTSET, raising=True):
        if value is _NOTSET:  # setattr("module.attr", value)
            module, _, attr = target.rpartition(".")
            target, name, value = importlib.import_module(module), attr, name
        old = getattr(target, name, _NOTSET)
        if old is _NOTSET and raising:
            raise AttributeError(f"{target!r} has no attribute {name!r}")
        self._undo.append(lambda: _restore_attr(target, name, old))
        setattr(target, name, value)

    def delattr(self, target, name, raising=True):
        old = getattr(target, name, _NOTSET)
        if old is _NOTSET:
            if raising:
                raise AttributeError(name)
            return
        self._undo.append(lambda: setattr(target, name, old))
        delattr(target, name)

    def setitem(self, mapping, key, value):
        old = mapping.get(key, _NOTSET)
        self._undo.append(lambda: _restore_item(mapping, key, old))
        mapping[key] = value

    def delitem(self, mapping, key, raising=True):
        if key not in mapping:
            if raising:
                raise KeyError(key)
            return
        old = mapping[key]
        self._undo.append(lambda: mapping.__setitem__(key, old))
        del mapping[key]

    def chdir(self, path):
        old = os.getcwd()
        self._undo.append(lambda: os.chdir(old))
        os.chdir(path)

    def undo(self):
        while self._undo:
            self._undo.pop()()


def _restore_env(name, old):
    if old is None:
        os.environ.pop(name, None)
    else:
        os.environ[name] = old


def _restore_attr(target, name, old):
    if old is _NOTSET:
        delattr(target, name)
    else:
        setattr(target, name, old)


def _restore_item(mapping, key, old):
    if old is _NOTSET:
        mapping.pop(key, None)
    else:
        mapping[key] = old


class Result:
    def __init__(self, file, name, outcome, seconds, detail=""):
        self.file, self.name, self.outcome = file, name, outcome
        self.seconds, self.detail = seconds, detail


def _test_files(paths):
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(p.rglob("test_*.py")))
        elif p.is_file():
            files.append(p)
        else:
            raise SystemExit(f"run_tests: no such file or directory: {p}")
    return files


def _import(path, index):
    name = f"_flow_test_{index}_{path.stem}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _collect(module):
    """(name, callable) of every test in `module`, in source order."""

    def line(obj):
        code = getattr(obj, "__code__", None)
        return code.co_firstlineno if code else 0

    tests = []
    for name, obj in vars(module).items():
        if getattr(obj, "__module__", None) != module.__name__:
            continue
        if name.startswith("test") and inspect.isfunction(obj):
            tests.append((line(obj), name, obj))
        elif name.startswith("Test") and inspect.isclass(obj):
            methods = [
                (line(f), m, f)
                for m, f in vars(obj).items()
                if m.startswith("test") and inspect.isfunction(f)
            ]
            first = min((m[0] for m in methods), default=0)
            for _, m, _f in sorted(methods):
                tests.append((first, f"{name}::{m}", _bound(obj, m)))
    return [(name, fn) for _, name, fn in sorted(tests, key=lambda t: t[0])]


def _bound(cls, method):
    def run(**fixtures):
        return getattr(cls(), method)(**fixtures)

    run.__signature__ = inspect.signature(getattr(cls, method)).replace(
        parameters=list(inspect.signature(getattr(cls, method)).parameters.values())[1:]
    )
    return run


def _failure_text(exc, test_file):
    """The traceback from the test's own frame on, ending with the failing source line; the
    local variables of each frame are shown, since a bare `assert` carries no message."""
    frames = traceback.StackSummary.extract(
        traceback.walk_tb(exc.__traceback__), capture_locals=True
    )
    start = next(
        (i for i, f in enumerate(frames) if Path(f.filename).resolve() == test_file),
        0,
    )
    cwd = os.getcwd() + os.sep
    for frame in frames:
        if frame.filename.startswith(cwd):  # sandbox paths are long and change every run
            frame.filename = frame.filename[len(cwd):]
        if frame.name == "<module>":  # a module's globals are not worth printing
            frame.locals = None
        elif frame.locals:
            frame.locals = {k: v[:200] for k, v in frame.locals.items()}
    text = "".join(traceback.StackSummary.from_list(frames[start:]).format())
    message = "".join(traceback.format_exception_only(type(exc), exc)).rstrip()
    return f"{text}{message}"


def _run_one(fn, test_file):
    params = inspect.signature(fn).parameters
    unknown = [p for p in params if p not in ("tmp_path", "monkeypatch")]
    if unknown:
        return "error", f"unknown fixture(s): {', '.join(unknown)} (only tmp_path and monkeypatch exist)"
    fixtures, tmp, patch = {}, None, MonkeyPatch()
    if "tmp_path" in params:
        tmp = Path(tempfile.mkdtemp(prefix="test-"))
        fixtures["tmp_path"] = tmp
    if "monkeypatch" in params:
        fixtures["monkeypatch"] = patch
    try:
        fn(**fixtures)
        return "passed", ""
    except Exception as exc:  # a failed assert, or anything the test raised: pytest's "failed"
        return "failed", _failure_text(exc, test_file)
    finally:
        patch.undo()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def run(paths):
    results = []
    for index, path in enumerate(_test_files(paths)):
        shown = path.as_posix()
        started = time.perf_counter()
        try:
            module = _import(path, index)
        except Exception as exc:
            detail = _failure_text(exc, path.resolve())
            results.append(Result(shown, "<import>", "error", time.perf_counter() - started, detail))
            continue
        for name, fn in _collect(module):
            started = time.perf_counter()
            outcome, detail = _run_one(fn, path.resolve())
            results.append(Result(shown, name, outcome, time.perf_counter() - started, detail))
    return results


def junit_xml(results, seconds):
    def count(outcome):
        return str(sum(r.outcome == outcome for r in results))

    suites = ET.Element("testsuites")
    suite = ET.SubElement(
        suites,
        "testsuite",
        name="run_tests",
        tests=str(len(results)),
        failures=count("failed"),
        errors=count("error"),
        skipped="0",
        time=f"{seconds:.3f}",
    )
    ET.SubElement(ET.SubElement(suite, "properties"), "property", name="python", value=platform.python_version())
    for r in results:
        classname = r.file[: -len(".py")].replace("/", ".") if r.file.endswith(".py") else r.file
        case = ET.SubElement(suite, "testcase", classname=classname, name=r.name, time=f"{r.seconds:.3f}")
        if r.outcome in ("failed", "error"):
            tag = "failure" if r.outcome == "failed" else "error"
            last = r.detail.strip().splitlines()[-1] if r.detail.strip() else r.outcome
            ET.SubElement(case, tag, message=last).text = r.detail
    ET.indent(suites)
    return ET.tostring(suites, encoding="unicode", xml_declaration=True) + "\n"


def main(argv):
    parser = argparse.ArgumentParser(prog="run_tests.py", description=__doc__.splitlines()[0])
    parser.add_argument("--junit-xml", metavar="FILE", help="also write a JUnit-style XML report")
    parser.add_argument("paths", nargs="*", default=["tests"], help="test directories or files")
    args = parser.parse_args(argv)

    sys.path.insert(0, os.getcwd())
    started = time.perf_counter()
    results = run(args.paths)
    seconds = time.perf_counter() - started

    for r in results:
        print(f"{r.outcome.upper():6} {r.file}::{r.name} ({r.seconds:.3f}s)")
        if r.detail:
            print("    " + r.detail.replace("\n", "\n    "))
    passed = sum(r.outcome == "passed" for r in results)
    bad = len(results) - passed
    print(
        f"{passed} passed, {bad} failed or errored in {seconds:.2f}s "
        f"(Python {platform.python_version()}, {sys.executable})"
    )
    if args.junit_xml:
        Path(args.junit_xml).parent.mkdir(parents=True, exist_ok=True)
        Path(args.junit_xml).write_text(junit_xml(results, seconds), encoding="utf-8")
    if not results:
        print(f"no tests found under {', '.join(args.paths)}", file=sys.stderr)
        return 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
