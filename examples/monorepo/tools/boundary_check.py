"""Domain-boundary check: Python imports between packages must follow the BUILD dependencies.

flow already refuses a BUILD dependency on a target that is not visible; this script checks that
the code agrees, e.g. that `mlops` does not import `data_quality` behind the BUILD file's back,
and that no `domain/` layer imports another package at all.

Usage: python3 boundary_check.py SRC_PACKAGES_DIR   (exit 1 and `file:line: message` on violations)
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


def check(root: Path):
    for package, allowed in sorted(ALLOWED.items()):
        for path in sorted((root / package / package).rglob("*.py")):
            in_domain = "domain" in path.relative_to(root / package / package).parts
            tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
            for line, module in imported_roots(tree):
                if module == package or module not in ALLOWED:
                    continue
                if in_domain:
                    yield f"{path}:{line}: the domain layer of `{package}` imports `{module}`"
                elif module not in allowed:
                    yield f"{path}:{line}: `{package}` may not import `{module}`"


def main(argv):
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1], file=sys.stderr)
        return 2
    violations = list(check(Path(argv[1])))
    for v in violations:
        print(v)
    print(f"{len(violations)} boundary violation(s)", file=sys.stderr)
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
