"""Domain-boundary check: Python imports between packages must follow the BUILD dependencies.

flow already refuses a BUILD dependency on a target that is not visible; this script checks that
the code agrees, e.g. that `mlops` does not import `data_quality` behind the BUILD file's back,
and that no `domain/` layer imports another package at all.

Usage, either form (exit 1 and `file:line: message` on violations, 2 on bad usage):

    python3 -B boundary_check.py --package NAME FILE...   the files of one package, paths relative
                                                       to its directory (`NAME/domain/x.py`)
    python3 -B boundary_check.py SRC_PACKAGES_DIR         every package under the directory
"""

import ast
import sys
from pathlib import Path

# Which domains each package may import: the same edges as the `deps` of the packages' `lib`s.
ALLOWED = {
    "data_quality": set(),
    "machine_learning": {"data_quality"},
    "anomaly_detection": {"machine_learning", "data_quality"},
    "mlops": {"machine_learning"},
    "deployment": set(),
}


def imported_roots(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module.split(".")[0]


def check_files(package: str, package_dir: Path, files):
    """Violations in `files` (paths under `package_dir`) of the domain package `package`."""
    allowed = ALLOWED[package]
    for path in sorted(files):
        in_domain = "domain" in path.relative_to(package_dir / package).parts
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for line, module in imported_roots(tree):
            if module == package or module not in ALLOWED:
                continue
            if in_domain:
                yield f"{path}:{line}: the domain layer of `{package}` imports `{module}`"
            elif module not in allowed:
                yield f"{path}:{line}: `{package}` may not import `{module}`"


def check(root: Path):
    for package in sorted(ALLOWED):
        files = (root / package / package).rglob("*.py")
        yield from check_files(package, root / package, files)


def main(argv):
    if len(argv) >= 3 and argv[1] == "--package" and argv[2] in ALLOWED:
        files = [Path(f) for f in argv[3:]]
        outside = [f for f in files if f.parts[:1] != (argv[2],)]
        if outside:
            print(f"not files of the package `{argv[2]}`: {outside[0]}", file=sys.stderr)
            return 2
        violations = list(check_files(argv[2], Path("."), files))
    elif len(argv) == 2 and not argv[1].startswith("-"):
        violations = list(check(Path(argv[1])))
    else:
        print(
            "usage: boundary_check.py --package NAME FILE...\n"
            "       boundary_check.py SRC_PACKAGES_DIR",
            file=sys.stderr,
        )
        return 2
    for v in violations:
        print(v)
    print(f"{len(violations)} boundary violation(s)", file=sys.stderr)
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
