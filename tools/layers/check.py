#!/usr/bin/env python3
"""The layering check: no module of a Rust crate imports one that imports it back (directly or
through others), and no Python module of bench/, tests/e2e or tools/ does either. A module is a
file (`foo.rs`, or `foo/mod.rs` with the files below it as submodules of their own); an import is
any `crate::foo` / `super::…` path or `use` outside comments. Prints the cycles and exits 1 if
there are any; with --graph, prints each module's imports.

Crates import each other only through Cargo.toml, which cargo already keeps acyclic."""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CRATES = ["crates/core", "crates/usage", "crates/portal", "crates/admin", "crates/remote", "crates/envoy",
          "wasm", "native", "filter", "cli", "rls", "azureml-sim", "bench/empty-filter"]
PY_DIRS = ["bench", "tests/e2e", "tools/mlgate_harness/mlgate_harness", "envoy", "deploy"]

COMMENT = re.compile(r"//.*?$|/\*.*?\*/", re.S | re.M)
STRING = re.compile(r'"(?:\\.|[^"\\])*"')


def rust_modules(src: Path) -> dict[str, Path]:
    """Module path (`admit::identify`) -> file, for the files under src/ (tests excluded)."""
    mods = {}
    for f in src.rglob("*.rs"):
        rel = f.relative_to(src).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] in ("mod", "lib", "main"):
            parts = parts[:-1]
        if "tests" in parts or parts[-1:] == ["tests"] or f.name.endswith("_tests.rs"):
            continue
        mods["::".join(parts)] = f
    return mods


def expand(text: str) -> list[str]:
    """Every `crate::…` / `super::…` path in `text`, with brace groups expanded:
    `super::{abi, guard, store::X}` is `super::abi`, `super::guard`, `super::store::X`."""
    out = []
    for m in re.finditer(r"\b(?:crate|super)(?:::(?:super|\w+))*(?:::\{)?", text):
        head = m.group(0)
        # `pub(crate)`, `pub(super)`, `pub(in …)`: visibility, not an import.
        if re.search(r"pub\(\s*(in\s+)?$", text[max(0, m.start() - 8):m.start()]):
            continue
        if not head.endswith("{"):
            out.append(head)
            continue
        # The brace group, nesting included.
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        inner = text[m.end():i - 1]
        prefix = head[:-3]
        parts, depth, cur = [], 0, ""
        for ch in inner:
            if ch == "," and depth == 0:
                parts.append(cur)
                cur = ""
                continue
            depth += {"{": 1, "}": -1}.get(ch, 0)
            cur += ch
        parts.append(cur)
        for part in parts:
            part = part.strip().split(" as ")[0].strip()
            if not part or part == "self":
                out.append(prefix)
            elif "{" in part:
                # A nested group (`store::{A, B}`): the same expansion, one level down.
                out.extend(expand(prefix + "::" + part))
            else:
                out.append(prefix + "::" + part)
    return out


def rust_edges(src: Path) -> dict[str, set[str]]:
    mods = rust_modules(src)
    edges: dict[str, set[str]] = {m: set() for m in mods}
    for m, f in mods.items():
        text = STRING.sub('""', COMMENT.sub("", f.read_text()))
        # `#[cfg(test)] mod tests { ... }` at the end of a file: test code, not a layer.
        text = text.split("#[cfg(test)]\nmod tests {")[0]
        here = m.split("::") if m else []
        for path in expand(text):
            segs = path.split("::")
            if segs[0] == "crate":
                target = segs[1:]
            else:
                base = here[:]
                # In foo/mod.rs or a top file, `super` is the parent of this module.
                while segs and segs[0] == "super":
                    base = base[:-1]
                    segs = segs[1:]
                target = base + segs
            # The longest known module prefix of the target; none: an item of the crate root
            # (its own or one of its re-exports). A path that lands on this module's ancestor
            # imports from it (the items it defines or re-exports) like any other.
            for n in range(len(target), -1, -1):
                cand = "::".join(target[:n])
                if cand in mods:
                    if cand != m and not cand.startswith(m + "::" if m else "\0"):
                        edges[m].add(cand)
                    break
        # A parent using a child by its bare name (`use request::x;`, `abi::call()`), beyond
        # declaring it with `mod`, imports from it too.
        body = re.sub(r"^\s*(pub(\([^)]*\))?\s+)?mod\s+\w+\s*;", "", text, flags=re.M)
        for child in {k for k in mods if k.startswith(m + "::" if m else "") and k and "::" not in k[len(m) + 2 if m else 0:]}:
            name = child.split("::")[-1]
            if re.search(rf"(?<![\w:]){name}::", body):
                edges[m].add(child)
    return edges


def py_edges(d: Path) -> dict[str, set[str]]:
    files = {f.stem: f for f in d.glob("*.py")}
    edges = {}
    for name, f in files.items():
        deps = set()
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.Import):
                deps |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                if node.level and node.module:
                    deps.add(node.module.split(".")[0])
                elif node.level:
                    deps |= {a.name for a in node.names}
                elif node.module:
                    deps.add(node.module.split(".")[0])
        edges[name] = {x for x in deps if x in files and x != name}
    return edges


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in list(edges):
        if v not in index:
            visit(v)
    return out


def main() -> int:
    graph = "--graph" in sys.argv
    bad = 0
    units = [(c, rust_edges(ROOT / c / "src")) for c in CRATES if (ROOT / c / "src").is_dir()]
    units += [(d, py_edges(ROOT / d)) for d in PY_DIRS if (ROOT / d).is_dir()]
    for name, edges in units:
        for comp in cycles(edges):
            bad += 1
            print(f"{name}: modules import each other: {' <-> '.join(x or '(root)' for x in comp)}")
        if graph:
            print(f"# {name}")
            for m in sorted(edges):
                print(f"  {m or '(root)'} -> {', '.join(sorted(edges[m])) or '-'}")
    if bad:
        return 1
    print(f"layers: no import cycle in {len(units)} crates and Python packages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
