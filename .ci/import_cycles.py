#!/usr/bin/env python3
"""Fails when files inside one crate import each other in a circle.

Reads every `use crate::...` / `super::...` path outside `#[cfg(test)]` and maps
it to the file (module) it names; a cycle between files is printed and fails.
"""
import glob
import os
import re
import sys


def module_of(src, path):
    parts = os.path.relpath(path, src)[:-3].split("/")
    return tuple(parts[:-1] if parts[-1] in ("mod", "lib", "main") else parts)


def imports(src, modules, module, path):
    text = open(path).read().split("#[cfg(test)]")[0]
    # Paths named in comments and docs are not imports.
    text = re.sub(r"//[^\n]*", "", text)
    found = set()
    for base, rest in re.findall(r"\b(crate|super)((?:::\w+)+)", text):
        target = [] if base == "crate" else list(module[:-1])
        for part in rest.strip(":").split("::"):
            if part == "super":
                target = target[:-1]
            elif tuple(target + [part]) in modules:
                target.append(part)
            else:
                break
        if tuple(target) != module and tuple(target) in modules:
            found.add(tuple(target))
    return found


def cycles(crate):
    src = os.path.join(crate, "src")
    paths = glob.glob(os.path.join(src, "**", "*.rs"), recursive=True)
    modules = {module_of(src, p): p for p in paths}
    graph = {m: imports(src, modules, m, p) for m, p in modules.items()}
    state, stack, found = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for dep in sorted(graph[node]):
            if state.get(dep) == "open":
                found.append(stack[stack.index(dep):] + [dep])
            elif dep not in state:
                visit(dep)
        stack.pop()
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def main():
    crates = sorted(os.path.dirname(p) for p in glob.glob("*/Cargo.toml"))
    bad = [(c, cycle) for c in crates for cycle in cycles(c)]
    for crate, cycle in bad:
        print(f"{crate}: import cycle " + " -> ".join("::".join(m) or "lib" for m in cycle))
    if bad:
        sys.exit(1)
    print(f"no import cycles in {len(crates)} crates")


if __name__ == "__main__":
    main()
