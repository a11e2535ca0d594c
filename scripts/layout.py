#!/usr/bin/env python3
"""Symbol order for link-time code layout (scripts/dist.sh, layout/build.rs).

    layout.py CALLGRIND_FILE BINARY ORDER_FILE
    layout.py --check ORDER_FILE BINARY

Reads a callgrind profile (made with --demangle=no, so names are the linker's), keeps every
function of BINARY the run executed, hottest (self cost) first, and writes their symbol names
one per line for lld's --symbol-ordering-file. Prints how many functions and how much code.
valgrind emulates a CPU without AVX-512 or the SHA extensions, so the training run takes other
variants of the crypto than the machine will: after the functions run, the list names the
CPU-specific variants of their families (same words, another instruction set).
With --check, says where the listed functions landed in a binary linked with ORDER_FILE.
"""
import collections
import re
import subprocess
import sys


def executed(callgrind_path):
    """Self cost per function name; functions only ever called (cfn=) count with 0."""
    names, cost = {}, collections.Counter()
    current, after_calls = None, False
    with open(callgrind_path, errors="replace") as f:
        for line in f:
            # Names are compressed: "fn=(id) name" the first time, "fn=(id)" after; the first
            # mention may be as a callee (cfn=).
            m = re.match(r"(c?fn)=\((\d+)\)(?: (.*))?", line.rstrip("\n"))
            if m:
                kind, ident, name = m.groups()
                if name:
                    names[ident] = name
                cost[names.get(ident)] += 0
                if kind == "fn":
                    current = names.get(ident)
            elif line.startswith("calls="):
                after_calls = True  # the next cost line is the call's inclusive cost
            elif current and (line[:1].isdigit() or line[:1] in "+-*"):
                if after_calls:
                    after_calls = False
                    continue
                fields = line.split()
                if len(fields) >= 2:
                    cost[current] += int(fields[1])
    cost.pop(None, None)
    return cost


def code_symbols(binary):
    """Address and size of every function symbol in the binary, by its (mangled) name."""
    out = subprocess.run(["nm", "-S", binary], capture_output=True, text=True, check=True).stdout
    symbols = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) == 4 and fields[2] in "tTwW":
            symbols[fields[3]] = (int(fields[0], 16), int(fields[1], 16))
    return symbols


# Instruction-set words in the names of functions picked at run time by CPU features.
CPU_WORDS = {"avx512", "avx2", "avx", "clmul", "aesni", "vaes256", "vaes512", "vaes",
             "x86_sha", "shaext", "soft", "ssse3", "sse2", "sse41", "pclmulqdq"}


def words(name):
    """The words of a symbol name (Rust's hash and length prefixes dropped), CPU words apart."""
    name = re.sub(r"17h[0-9a-f]{16}E$", "", name).replace("x86_sha", " x86_sha ")
    found = {w for w in re.split(r"[^a-z]+|(?<=[a-z])\d+", name.lower()) if w}
    cpu = {w for w in CPU_WORDS if w in found or (w == "x86_sha" and "x86_sha" in name)}
    return {w for w in found - cpu - {"aws"} if len(w) > 2}, cpu


def cpu_variants(hot, sizes):
    """Functions of `sizes` named like a hot function but for another instruction set."""
    families = [w for w, cpu in map(words, hot) if len(w) >= 2]
    out = []
    for name in sizes:
        if name in hot:
            continue
        w, cpu = words(name)
        if cpu and len(w) >= 2 and any(len(w & f) >= 2 and (w <= f or f <= w or len(w & f) >= 3)
                                       for f in families):
            out.append(name)
    return sorted(out)


def check(order_path, binary):
    """Print how many listed functions the binary has and how tightly they are packed."""
    with open(order_path) as f:
        listed = [line.strip() for line in f if line.strip()]
    symbols = code_symbols(binary)
    found = [symbols[name] for name in listed if name in symbols]
    if not found:
        sys.exit(f"{binary}: none of the {len(listed)} listed functions")
    text_start = min(addr for addr, _ in symbols.values())
    lo = min(addr for addr, _ in found)
    hi = max(addr + size for addr, size in found)
    print(f"{binary}: {len(found)} of {len(listed)} listed functions, in "
          f"{(hi - lo) / 1024:.0f} KiB starting {(lo - text_start) / 1024:.0f} KiB into .text")


def main():
    if sys.argv[1] == "--check":
        check(*sys.argv[2:4])
        return
    callgrind_path, binary, order_path = sys.argv[1:4]
    cost = executed(callgrind_path)
    sizes = {name: size for name, (_, size) in code_symbols(binary).items()}
    hot = [name for name, _ in cost.most_common() if name in sizes]
    hot += cpu_variants(set(hot), sizes)
    text = "".join(name + "\n" for name in hot)
    try:
        with open(order_path) as f:
            same = f.read() == text
    except FileNotFoundError:
        same = False
    if not same:  # an unchanged file keeps its time: no relink
        with open(order_path, "w") as f:
            f.write(text)
    total = sum(sizes.values())
    placed = sum(sizes[name] for name in hot)
    print(f"{binary}: {len(hot)} functions executed, {placed / 1024:.0f} KiB "
          f"of {total / 1024:.0f} KiB of code")


if __name__ == "__main__":
    main()
