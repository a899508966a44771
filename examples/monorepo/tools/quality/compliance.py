"""The compliance checkers: GDPR, SOX and HIPAA rules over code and configuration.

    python3 -m quality.compliance REGIME --code DIR --config compliance.toml
        [--flow-toml flow.toml] [--source FORMAT] --out FILE.sarif

REGIME is `gdpr`, `sox` or `hipaa`. The checks are small and explicit (what each one
looks for is in its rule's text), read every `*.py` file under DIR, and write SARIF:
one result per finding, printed as `file:line: rule: message`; the exit code is 0 either
way, and the gate over the SARIF decides. FORMAT names a code file in the report:
`{top}` is its first directory under DIR, `{path}` its path under DIR (the release
bundle holds `mlops/domain/registry.py`, from `src/packages/mlops/mlops/...`).
"""

import argparse
import ast
import sys
import tomllib
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

from quality import sarif

Finding = Tuple[str, str, int, str]  # rule, path, line, message

LOG_CALLS = {"print", "debug", "info", "warning", "error", "exception", "critical"}

RULES = {
    "gdpr": [
        sarif.rule("GDPR-LOG", "personal data written to a log or to output"),
        sarif.rule("GDPR-RETENTION", "personal data kept longer than the policy says"),
    ],
    "sox": [
        sarif.rule("SOX-WINDOW", "a controlled environment without a change window"),
        sarif.rule(
            "SOX-APPROVAL", "unapproved emergency changes to a controlled environment"
        ),
    ],
    "hipaa": [
        sarif.rule("HIPAA-TLS", "data sent over plain http to a host not local"),
        sarif.rule("HIPAA-VERIFY", "TLS certificate verification turned off"),
        sarif.rule("HIPAA-HASH", "MD5 or SHA-1 used for security"),
    ],
}


def _names(node: ast.AST) -> Iterator[str]:
    """The identifiers, attribute names and string parts mentioned under `node`."""
    for child in ast.walk(node):
        if isinstance(child, ast.Name):
            yield child.id.lower()
        elif isinstance(child, ast.Attribute):
            yield child.attr.lower()
        elif isinstance(child, ast.Constant) and isinstance(child.value, str):
            yield child.value.lower()


def _called(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    return func.id if isinstance(func, ast.Name) else ""


def gdpr_code(tree: ast.AST, config: Dict[str, Any]) -> Iterator[Tuple[str, int, str]]:
    """Log and print calls that mention a name of personal data."""
    personal = [p.lower() for p in config.get("personal_data", [])]
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or _called(node) not in LOG_CALLS:
            continue
        said = {n for arg in node.args for n in _names(arg)}
        hits = sorted({p for p in personal for n in said if p in n})
        if hits:
            what = ", ".join(hits)
            yield "GDPR-LOG", node.lineno, f"a log call mentions personal data ({what})"


def hipaa_code(tree: ast.AST, config: Dict[str, Any]) -> Iterator[Tuple[str, int, str]]:
    """Plain-http URLs to other hosts, verification turned off, MD5 and SHA-1."""
    local = config.get("local_hosts", ["127.0.0.1", "localhost"])
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
            if text.startswith("http://"):
                host = text[len("http://") :].split("/")[0].split(":")[0]
                if host and host not in local and "{" not in host:
                    yield "HIPAA-TLS", node.lineno, f"plain http to {host}"
        if not isinstance(node, ast.Call):
            continue
        for keyword in node.keywords:
            value = keyword.value
            off = isinstance(value, ast.Constant) and value.value is False
            if keyword.arg == "verify" and off:
                yield "HIPAA-VERIFY", node.lineno, "verify=False"
        name = _called(node)
        if name == "_create_unverified_context":
            yield "HIPAA-VERIFY", node.lineno, "ssl._create_unverified_context()"
        if name in ("md5", "sha1"):
            for_security = not any(
                k.arg == "usedforsecurity"
                and isinstance(k.value, ast.Constant)
                and k.value.value is False
                for k in node.keywords
            )
            if for_security:
                message = f"hashlib.{name}() without usedforsecurity=False"
                yield "HIPAA-HASH", node.lineno, message


CodeCheck = Callable[[ast.AST, Dict[str, Any]], Iterator[Tuple[str, int, str]]]
CODE_CHECKS: Dict[str, CodeCheck] = {"gdpr": gdpr_code, "hipaa": hipaa_code}


def gdpr_config(config: Dict[str, Any], path: str) -> Iterator[Finding]:
    """The retention period against the policy's maximum."""
    days, most = config.get("retention_days"), config.get("max_retention_days")
    if days is None or most is None or days > most:
        message = f"retention_days is {days}, the policy allows at most {most}"
        yield "GDPR-RETENTION", path, 1, message


def sox_config(
    config: Dict[str, Any], flow: Dict[str, Any], path: str
) -> Iterator[Finding]:
    """Each controlled environment has a window and approved emergencies (flow.toml)."""
    environments = flow.get("environments", {})
    for name in config.get("controlled_environments", []):
        settings = environments.get(name)
        if settings is None:
            yield "SOX-WINDOW", path, 1, f"environment `{name}` is not declared"
            continue
        if not settings.get("window"):
            message = f"environment `{name}` has no deployment window"
            yield "SOX-WINDOW", path, 1, message
        if settings.get("emergency_approval") is not True:
            message = f"environment `{name}`: set emergency_approval = true"
            yield "SOX-APPROVAL", path, 1, message


def code_findings(
    regime: str, code: Path, config: Dict[str, Any], source: str
) -> List[Finding]:
    """The findings of `regime` in every Python file under `code`."""
    check = CODE_CHECKS.get(regime)
    if check is None:
        return []
    out = []
    for file in sorted(code.rglob("*.py")):
        relative = file.relative_to(code)
        shown = source.format(top=relative.parts[0], path=relative.as_posix())
        tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
        out += [(rule, shown, line, text) for rule, line, text in check(tree, config)]
    return out


def main(argv: Optional[List[str]] = None) -> int:
    """Writes the SARIF report of one regime."""
    parser = argparse.ArgumentParser(prog="quality.compliance")
    parser.add_argument("regime", choices=sorted(RULES))
    parser.add_argument("--code", type=Path, required=True)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--flow-toml", type=Path, default=Path("flow.toml"))
    parser.add_argument("--source", default="{path}")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    policy = tomllib.loads(args.config.read_text(encoding="utf-8"))
    config = policy.get(args.regime, {})
    found = code_findings(args.regime, args.code, config, args.source)
    if args.regime == "gdpr":
        found += gdpr_config(config, str(args.config))
    if args.regime == "sox":
        flow = tomllib.loads(args.flow_toml.read_text(encoding="utf-8"))
        found += sox_config(config, flow, str(args.flow_toml))
    results = [sarif.result(rule, text, path, line) for rule, path, line, text in found]
    tool = f"quality.compliance {args.regime}"
    sarif.write(args.out, tool, RULES[args.regime], results)
    sarif.show(results)
    print(f"{args.regime}: {len(results)} finding(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
