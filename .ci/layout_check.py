"""Checks the layout rules of ../shared/STYLE.md on src/: every file at most 400 lines of code
outside its `#[cfg(test)]` modules, no circle of `use` between files, and the one-way data flow
(nothing under http/ names a source type or an AWS SDK; nothing in the core names axum, hyper or
tower; credentials/ uses nothing else of the crate). Prints the layout with `--table`.

Run through `bash .ci/layout-check`; exits 1 naming every rule broken.
"""

import re
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
MAX_CODE_LINES = 400
# (files under this prefix, pattern they may not contain, what the pattern means)
FORBIDDEN = [
    ("http/", r"\b(crate|super)::source\b|\baws_(sdk|config|smithy)\w*", "a source type or the AWS SDK"),
    ("broker/", r"\b(axum|hyper|tower|tower_http)::", "axum, hyper or tower"),
    ("source/", r"\b(axum|hyper|tower|tower_http)::", "axum, hyper or tower"),
    ("cache", r"\b(axum|hyper|tower|tower_http)::", "axum, hyper or tower"),
    ("credentials/", r"\b(axum|hyper|tower|tower_http)::", "axum, hyper or tower"),
    ("credentials/", r"\bcrate::(?!credentials\b)\w+", "another module of the crate"),
]


def module_of(path):
    """The module path of a file: src/a/b.rs and src/a/b/mod.rs are ["a", "b"]."""
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] in ("mod", "lib", "main") and (len(parts) > 1 or parts[-1] != "main"):
        parts = parts[:-1]
    return parts


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(re.sub(r"//.*", "", line) for line in text.splitlines())


def without_tests(text):
    """The text without `#[cfg(test)]` items (a module, an impl or a function), by brace depth."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        if lines[i].strip() == "#[cfg(test)]":
            depth, seen = 0, False
            i += 1
            while i < len(lines):
                depth += lines[i].count("{") - lines[i].count("}")
                seen = seen or "{" in lines[i]
                ended = (seen and depth <= 0) or (not seen and lines[i].rstrip().endswith(";"))
                i += 1
                if ended:
                    break
            continue
        out.append(lines[i])
        i += 1
    return "\n".join(out)


def code_lines(text):
    return sum(1 for line in strip_comments(without_tests(text)).splitlines() if line.strip())


def use_paths(text):
    """Every crate-relative path a file names: `use` trees expanded, and inline paths; a path
    that starts with one of the file's own child modules is relative to the file (`self::`)."""
    # `pub(in crate::x)` is visibility, not a use.
    text = re.sub(r"pub\(in [\w:]+\)", "pub", strip_comments(text))
    children = set(re.findall(r"^\s*(?:pub(?:\([\w:]+\))?\s+)?mod\s+(\w+)\s*;", text, flags=re.M))
    roots = ("crate", "super", "self")
    paths = []
    for tree in re.findall(r"\buse\s+([^;]+);", text):
        paths.extend(expand(tree.replace("\n", " ").replace(" ", "")))
    paths.extend(re.findall(r"(?<![\w:])((?:\w+)(?:::\w+)+)", text))
    out = []
    for path in paths:
        first = path.split("::")[0]
        if first in roots:
            out.append(path)
        elif first in children:
            out.append("self::" + path)
    return out


def expand(tree):
    if "{" not in tree:
        return [tree.split(" as ")[0]]
    prefix, rest = tree.split("{", 1)
    inner = rest[: rest.rindex("}")]
    parts, depth, current = [], 0, ""
    for c in inner:
        if c == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += c == "{"
        depth -= c == "}"
        current += c
    parts.append(current)
    out = []
    for part in filter(None, parts):
        for sub in expand(part):
            out.append(prefix.rstrip(":") if sub == "self" else prefix + sub)
    return out


def resolve(files, module, path):
    """The file a path lands in: the longest prefix of it that is a module file."""
    segments = path.split("::")
    here = list(module)
    absolute = []
    for i, s in enumerate(segments):
        if s == "crate" and i == 0:
            here = []
        elif s == "super":
            here = here[:-1]
        elif s == "self" and i == 0:
            pass
        else:
            absolute = here + segments[i:]
            break
    else:
        absolute = here
    for n in range(len(absolute), -1, -1):
        target = files.get(tuple(absolute[:n]))
        if target is not None:
            return target
    return None


def cycles(graph):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def check(src, show=False):
    """The problems of the tree at `src`, one line each; prints the layout with `table`."""
    global SRC
    SRC = src
    rs = sorted(p for p in SRC.rglob("*.rs"))
    files = {}
    for p in rs:
        if p.name == "main.rs" and p.parent == SRC:
            continue
        if p.name == "tests.rs":
            continue  # a test module beside its parent: counted with the parent's tests
        files[tuple(module_of(p))] = p
    problems = []
    graph = {}
    table = []
    for p in rs:
        text = p.read_text()
        rel = str(p.relative_to(SRC))
        lines = code_lines(text) if p.name != "tests.rs" else 0
        table.append((rel, len(text.splitlines()), lines))
        if lines > MAX_CODE_LINES:
            problems.append(f"{rel}: {lines} lines of code outside tests (at most {MAX_CODE_LINES})")
        for prefix, pattern, meaning in FORBIDDEN:
            if rel.startswith(prefix):
                for m in re.finditer(pattern, strip_comments(text)):
                    problems.append(f"{rel}: names {meaning} ({m.group(0)})")
        if p.name in ("main.rs", "tests.rs") and p.parent == SRC or p.name == "tests.rs":
            continue
        module = module_of(p)
        # Paths in a mod.rs / lib.rs are relative to its own module; elsewhere too.
        targets = set()
        for path in use_paths(without_tests(text)):
            target = resolve(files, module, path)
            if target is not None and target != p:
                targets.add(target)
        graph[p] = targets
    for component in cycles(graph):
        names = ", ".join(str(c.relative_to(SRC)) for c in component)
        problems.append(f"circle of use between: {names}")
    if show:
        for rel, total, lines in table:
            print(f"{total:6} {lines:6}  src/{rel}")
        print(f"{sum(t for _, t, _ in table):6} {sum(c for _, _, c in table):6}  "
              f"total ({len(table)} files; columns: lines, code lines outside tests)")
    return problems


def self_test():
    """The checker on a small tree that breaks every rule once: it must find each."""
    import tempfile
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        for rel, text in {
            "lib.rs": "mod a;\nmod b;\nmod http;\nmod credentials;\nmod broker;\nmod p;\n",
            "p/mod.rs": "mod c;\npub struct P;\nfn f() -> c::C { c::C }\n",
            "p/c.rs": "use super::P;\npub struct C;\n",
            "a.rs": "use crate::b::B;\npub struct A;\n",
            "b.rs": "use crate::a::A;\npub struct B;\n",
            "http/mod.rs": "use crate::source::Topology;\n",
            "credentials/mod.rs": "use crate::config::Config;\n",
            "broker/mod.rs": "fn f() {}\n" * 401 + "#[cfg(test)]\nmod tests {\n" + "fn g() {}\n" * 500 + "}\n",
        }.items():
            (src / rel).parent.mkdir(parents=True, exist_ok=True)
            (src / rel).write_text(text)
        found = check(src)
    expected = ["circle of use between: a.rs, b.rs", "circle of use between: p/c.rs, p/mod.rs", "http/mod.rs: names a source type",
                "credentials/mod.rs: names another module", "broker/mod.rs: 401 lines of code"]
    missing = [e for e in expected if not any(e in p for p in found)]
    if missing or len(found) != len(expected):
        print(f"layout: the self-test found {found}, expected {expected}", file=sys.stderr)
        return False
    return True


def main():
    if not self_test():
        return 1
    problems = check(Path(__file__).resolve().parent.parent / "src", "--table" in sys.argv)
    for problem in problems:
        print(f"layout: {problem}", file=sys.stderr)
    if not problems:
        print("layout: every file under src/ keeps the layout rules")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
