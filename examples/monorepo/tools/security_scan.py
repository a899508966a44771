"""A small static security scanner on the standard library alone (an AST walk, no imports of
the code scanned), for machines without bandit. It flags:

| rule                 | severity | what                                                         |
|----------------------|----------|--------------------------------------------------------------|
| eval-exec            | high     | a call of the builtins `eval` or `exec`                      |
| pickle-load          | high     | `pickle.load`/`pickle.loads` (also `cPickle`, `dill`): unpickling runs code |
| shell-true           | high     | a `subprocess` call with `shell=True`                        |
| os-shell             | medium   | `os.system`, `os.popen`: a command line through the shell     |
| yaml-unsafe-load     | medium   | `yaml.load` without `Loader=SafeLoader`/`CSafeLoader`, `yaml.unsafe_load` |
| hardcoded-password   | medium   | a non-empty string literal assigned to (or passed as, or keyed by) a name like `password`, `secret`, `token`, `api_key` |

Imports are followed (`import subprocess as sp`, `from pickle import loads`). A finding on a
line that carries a `# nosec` comment is not reported.

Usage:

    python3 -B security_scan.py --output REPORT.json FILE...

Writes a JSON report (files scanned, findings with file, line, column, rule, severity and
message, counts by severity) and prints each finding as `file:line:col: [severity] rule:
message`. Exit status: 0 without findings, 1 with any, 2 on bad usage or a file that does not
parse.
"""

import argparse
import ast
import json
import re
import sys
from pathlib import Path

SECRET_NAME = re.compile(r"(pass(word|wd)?|pwd|secret|token|api_?key|private_?key)$", re.I)
SAFE_LOADERS = {"SafeLoader", "CSafeLoader", "yaml.SafeLoader", "yaml.CSafeLoader"}
SUBPROCESS_CALLS = {"call", "run", "Popen", "check_call", "check_output", "getoutput", "getstatusoutput"}
UNPICKLERS = {"pickle", "cPickle", "_pickle", "dill"}


class Scanner(ast.NodeVisitor):
    def __init__(self, path, lines):
        self.path, self.lines = path, lines
        self.aliases = {}  # local name -> dotted name it stands for
        self.findings = []

    def report(self, node, rule, severity, message):
        line = self.lines[node.lineno - 1] if node.lineno <= len(self.lines) else ""
        if re.search(r"#\s*nosec\b", line):
            return
        self.findings.append(
            {
                "file": self.path,
                "line": node.lineno,
                "col": node.col_offset + 1,
                "rule": rule,
                "severity": severity,
                "message": message,
            }
        )

    # Imports: remember what each local name refers to.
    def visit_Import(self, node):
        for a in node.names:
            if a.asname:
                self.aliases[a.asname] = a.name
            else:
                root = a.name.split(".")[0]
                self.aliases[root] = root

    def visit_ImportFrom(self, node):
        if node.module and node.level == 0:
            for a in node.names:
                self.aliases[a.asname or a.name] = f"{node.module}.{a.name}"

    def dotted(self, node):
        """`a.b.c` for a Name/Attribute chain, with the first name resolved through imports."""
        parts = []
        while isinstance(node, ast.Attribute):
            parts.append(node.attr)
            node = node.value
        if not isinstance(node, ast.Name):
            return None
        parts.append(self.aliases.get(node.id, node.id))
        return ".".join(reversed(parts))

    def visit_Call(self, node):
        name = self.dotted(node.func) or ""
        module, _, func = name.rpartition(".")
        keywords = {k.arg: k.value for k in node.keywords if k.arg}
        if name in ("eval", "exec", "builtins.eval", "builtins.exec"):
            self.report(node, "eval-exec", "high", f"`{func or name}` runs arbitrary code")
        elif module in UNPICKLERS and func in ("load", "loads"):
            self.report(node, "pickle-load", "high", f"`{name}` runs code from the data it loads")
        elif module == "subprocess" and func in SUBPROCESS_CALLS:
            shell = keywords.get("shell")
            if func in ("getoutput", "getstatusoutput") or (
                isinstance(shell, ast.Constant) and shell.value is True
            ):
                self.report(node, "shell-true", "high", f"`{name}` runs its command through the shell")
        elif name in ("os.system", "os.popen"):
            self.report(node, "os-shell", "medium", f"`{name}` runs its command through the shell")
        elif name == "yaml.unsafe_load":
            self.report(node, "yaml-unsafe-load", "medium", "`yaml.unsafe_load` can build arbitrary objects")
        elif name == "yaml.load":
            loader = keywords.get("Loader", node.args[1] if len(node.args) > 1 else None)
            if loader is None or self.dotted(loader) not in SAFE_LOADERS:
                self.report(
                    node,
                    "yaml-unsafe-load",
                    "medium",
                    "`yaml.load` without `Loader=yaml.SafeLoader` can build arbitrary objects",
                )
        for k in node.keywords:
            if k.arg and SECRET_NAME.search(k.arg) and _secret_literal(k.value):
                self.report(k.value, "hardcoded-password", "medium", f"hard-coded value for `{k.arg}=`")
        self.generic_visit(node)

    def _targets(self, targets, value):
        if not _secret_literal(value):
            return
        for t in targets:
            name = t.id if isinstance(t, ast.Name) else t.attr if isinstance(t, ast.Attribute) else None
            if name and SECRET_NAME.search(name):
                self.report(value, "hardcoded-password", "medium", f"hard-coded value assigned to `{name}`")

    def visit_Assign(self, node):
        self._targets(node.targets, node.value)
        self.generic_visit(node)

    def visit_AnnAssign(self, node):
        if node.value is not None:
            self._targets([node.target], node.value)
        self.generic_visit(node)

    def visit_Dict(self, node):
        for k, v in zip(node.keys, node.values):
            if isinstance(k, ast.Constant) and isinstance(k.value, str):
                if SECRET_NAME.search(k.value) and _secret_literal(v):
                    self.report(v, "hardcoded-password", "medium", f"hard-coded value for key `{k.value}`")
        self.generic_visit(node)

    def visit_FunctionDef(self, node):
        args = node.args.posonlyargs + node.args.args
        defaults = list(zip(args[len(args) - len(node.args.defaults):], node.args.defaults))
        defaults += [(a, d) for a, d in zip(node.args.kwonlyargs, node.args.kw_defaults) if d]
        for arg, default in defaults:
            if SECRET_NAME.search(arg.arg) and _secret_literal(default):
                self.report(default, "hardcoded-password", "medium", f"hard-coded default for `{arg.arg}`")
        self.generic_visit(node)

    visit_AsyncFunctionDef = visit_FunctionDef


def _secret_literal(node):
    return isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.strip() != ""


def scan(path):
    text = Path(path).read_text(encoding="utf-8")
    scanner = Scanner(path, text.splitlines())
    scanner.visit(ast.parse(text, filename=path))
    return scanner.findings


def main(argv):
    parser = argparse.ArgumentParser(prog="security_scan.py", description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, metavar="REPORT.json")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args(argv)

    findings = []
    for f in args.files:
        try:
            findings.extend(scan(f))
        except (SyntaxError, UnicodeDecodeError, OSError) as e:
            print(f"{f}: cannot scan: {e}", file=sys.stderr)
            return 2
    findings.sort(key=lambda x: (x["file"], x["line"], x["col"], x["rule"]))
    counts = {s: sum(x["severity"] == s for x in findings) for s in ("high", "medium")}
    report = {
        "tool": "security_scan",
        "files_scanned": len(args.files),
        "counts": counts,
        "findings": findings,
    }
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    for x in findings:
        print(f"{x['file']}:{x['line']}:{x['col']}: [{x['severity']}] {x['rule']}: {x['message']}")
    print(
        f"{len(findings)} finding(s) in {len(args.files)} file(s): "
        f"{counts['high']} high, {counts['medium']} medium"
    )
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
