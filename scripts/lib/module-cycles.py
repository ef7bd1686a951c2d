#!/usr/bin/env python3
"""Module cycles inside each crate: reads `crate::<module>` paths (in `use` lines and in code) of
every top-level module of crates/*/src and reports each cycle of the graph they make. A module's
own submodules count as the module. Exit 1 when there is a cycle."""
import pathlib
import re
import sys

root = pathlib.Path(__file__).resolve().parents[2]
failed = False
for src in sorted(root.glob("crates/*/src")):
    crate = src.parent.name
    modules = {}
    for f in src.rglob("*.rs"):
        rel = f.relative_to(src)
        top = rel.parts[0].removesuffix(".rs")
        if top in ("lib", "main"):
            continue
        modules.setdefault(top, set())
        text = f.read_text()
        # Paths to sibling modules: `crate::x`, and `use crate::{x, y::z}` groups.
        for m in re.finditer(r"crate::(\w+)", text):
            modules[top].add(m.group(1))
        for m in re.finditer(r"crate::\{([^}]*)\}", text, re.S):
            for part in re.split(r",", m.group(1)):
                name = part.strip().split("::")[0].strip()
                if name:
                    modules[top].add(name)
    graph = {m: {d for d in deps if d in modules and d != m} for m, deps in modules.items()}
    # Strongly connected components (Tarjan): every one with more than one module is a cycle.
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
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
    for v in sorted(graph):
        if v not in index:
            visit(v)
    for comp in out:
        failed = True
        edges = [f"{a} -> {b}" for a in comp for b in sorted(graph[a]) if b in comp]
        print(f"{crate}: module cycle among {', '.join(comp)}: {'; '.join(edges)}")
sys.exit(1 if failed else 0)
