"""The results files of benchmarks/kernels.py: Markdown tables, JSON beside them, and the charts.

Kept apart from the measuring code so that a reader of kernels.py sees only how things are timed.
Times in the files are milliseconds; rates are GB/s (bytes formula per case) or GFLOP/s (attention).
"""
from __future__ import annotations

import os

from benchmarks import _harness as H


def _ms(s: dict) -> str:
    return f"{s['median'] * 1e3:.2f} [{s['min'] * 1e3:.2f}, {s['max'] * 1e3:.2f}]" if s else "n/a"


def rate(case: dict, p: str, seconds: float) -> float:
    """GB/s or GFLOP/s of `case` on pass `p` at `seconds` per call."""
    return case["work"][p] / seconds / 1e9


def line_of(case: dict, machine: dict) -> tuple:
    """(the machine line this case is measured against, its unit)."""
    if case["unit"] == "FLOP":
        return machine["matmul_gflops"]["line"], "GFLOP/s"
    return machine["copy_gbs"]["line"], "GB/s"


def compile_text(firsts: list) -> tuple:
    """(text, first process's seconds) from the per-round first-call records of one implementation."""
    if not firsts:
        return "n/a", None
    f0 = firsts[0]
    what = "compiled" if f0["misses"] else ("cache load" if f0["hits"] else "already loaded")
    text = f"{f0['compile_s']:.2f} ({what})"
    later = [f["compile_s"] for f in firsts[1:]]
    if later:
        text += f"; later rounds {H.median(later):.2f}"
    return text, f0["compile_s"]


def version_names(data: dict) -> list:
    """The numbered versions timed in this run (v1, v2, ..., in numeric order)."""
    names = {k.split("|")[2] for k in data["times"]}
    return sorted((n for n in names if n[:1] == "v" and n[1:].isdigit()), key=lambda n: int(n[1:]))


def rows_of(data: dict, impls: tuple) -> list:
    """One dict per (case, pass) with the summaries of `impls` and the derived rates and ratios."""
    rows = []
    for case in data["cases"]:
        line, unit = line_of(case, data["machine"])
        for p in case["passes_timed"]:
            r = {"case": case["name"], "family": case["family"], "shape": case["shape"], "variant": case["variant"],
                 "pass": p, "unit": unit, "work": case["work"][p], "line": line, "impls": {}}
            for impl in impls:
                s = data["times"].get(f"{case['name']}|{p}|{impl}")
                if not s:
                    continue
                ach = rate(case, p, s["median"])
                r["impls"][impl] = dict(s, ms=s["median"] * 1e3, rate=ach, pct_of_line=100 * ach / line)
                firsts = data["first"].get(f"{case['name']}|{p}|{impl}", [])
                if firsts:
                    r["impls"][impl]["first_call"], r["impls"][impl]["compile_s"] = compile_text(firsts)
            rows.append(r)
    return rows


def _passes(data: dict, versions: bool) -> None:
    for case in data["cases"]:
        if case["family"] == "adamw":
            case["passes_timed"] = ["step"]
        else:
            case["passes_timed"] = ["fwd", "bwd"] if versions else ["fwd", "fwd+bwd"]


def _method_lines(data: dict) -> list:
    return [f"Times in ms: median of the {data['rounds']} per-round medians (each round: one fresh process per "
            f"engine, up to {data['repeats']} timed calls after a warm-up call, fewer past 2 s), [min, max] over "
            "every timed call of every round; the NumPy reference (the teaching baseline) is timed in the first "
            "round only. In the first round, before timing, every output of ours and of PyTorch was checked "
            "against the NumPy reference at the same shape (arrays within 1e-4 of their largest entry); the "
            "inputs are the same in every round.", ""]


def write_main(out: str, cmd: str, data: dict) -> None:
    _passes(data, versions=False)
    rows = rows_of(data, ("reference", "minillm", "torch"))
    lines = H.header_lines("Kernel benchmark: minillm (Numba) vs PyTorch CPU vs the NumPy reference", data,
                           data["threads"])
    lines += _method_lines(data)
    lines += ["The minillm column is the kernel the engine uses (`kernels.get(\"numba\")`); ratio = PyTorch time / "
              "minillm time (> 1: minillm is faster). First call: the first call's time minus a warm call's, i.e. "
              "Numba compiling (or loading its on-disk cache) alone; the NumPy reference is not in it.", "",
              "| kernel | shape | pass | NumPy ref ms | minillm ms | PyTorch ms | minillm rate (% of line) "
              "| PyTorch rate (% of line) | PyTorch / minillm | minillm first call s |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        i = r["impls"]
        ours, peer = i.get("minillm"), i.get("torch")
        if ours and peer:
            r["ratio"] = peer["median"] / ours["median"]
        lines.append(
            f"| {r['family']} | {tuple(r['shape'])}{' ' + r['variant'] if r['variant'] else ''} | {r['pass']} "
            f"| {i['reference']['ms']:.2f} | {_ms(ours)} | {_ms(peer)} "
            f"| {ours['rate']:.1f} {r['unit']} ({ours['pct_of_line']:.0f}%) "
            f"| {peer['rate']:.1f} {r['unit']} ({peer['pct_of_line']:.0f}%) "
            f"| {r.get('ratio', float('nan')):.2f}x | {ours.get('first_call', 'n/a')} |")
    lines += ["", "Work per call (bytes or FLOP):", ""]
    lines += [f"- {c['name']}: {c['formula']}" for c in data["cases"]]
    lines += ["", "Taken on a 2-core machine shared with other jobs (see the load average above): the figures are "
              "noisy and will be re-measured on a quiet machine with the command on the first line.", ""]
    H.write_results(out, "kernels", cmd, lines, dict(data, rows=rows))
    _plot_main(out, rows, data)


def write_versions(out: str, cmd: str, data: dict, family: str) -> None:
    data = dict(data, cases=[c for c in data["cases"] if c["family"] == family])
    _passes(data, versions=True)
    impls = ("reference", *version_names(data), "torch")
    rows = rows_of(data, impls)
    winners = {}
    for c in data["cases"]:
        for w in data["first"].get(f"{c['name']}|winner", [])[:1]:
            winners = w
    lines = H.header_lines(f"Kernel lab: every version of {family}", data, data["threads"])
    lines += _method_lines(data)
    lines += ["Forward versions are timed on the forward, backward versions on the backward alone (fed the "
              "reference forward's saved tensors; PyTorch: `autograd.grad` on a kept graph). The version the "
              "engine uses (`kernels.get(\"numba\")`) is marked *engine*: " +
              ", ".join(f"`{fn}` = {v}" for fn, v in winners.items()) + ". Chart: "
              f"[kernels_{family}.png](kernels_{family}.png).", "",
              "| shape | pass | implementation | ms | rate | % of line | vs reference | PyTorch / this "
              "| first call s |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        fn = {"fwd": f"{family}_fwd", "bwd": f"{family}_bwd", "step": "adamw_step"}[r["pass"]]
        ref, peer = r["impls"].get("reference"), r["impls"].get("torch")
        for impl, s in r["impls"].items():
            name = impl + (" *engine*" if winners.get(fn) == impl else "") if impl not in ("reference", "torch") \
                else {"reference": "NumPy reference", "torch": "PyTorch"}[impl]
            s["vs_reference"] = ref["median"] / s["median"] if ref else None
            s["torch_over_this"] = peer["median"] / s["median"] if peer else None
            lines.append(
                f"| {tuple(r['shape'])}{' ' + r['variant'] if r['variant'] else ''} | {r['pass']} | {name} "
                f"| {_ms(s)} | {s['rate']:.2f} {r['unit']} | {s['pct_of_line']:.0f}% "
                f"| {s['vs_reference']:.1f}x | {s['torch_over_this']:.2f}x | {s.get('first_call', '')} |")
    lines += ["", "Work per call: " + "; ".join(f"{c['name']}: {c['formula']}" for c in data["cases"]), "",
              "Taken on a 2-core machine shared with other jobs: noisy; to be re-measured on a quiet machine with "
              "the command on the first line.", ""]
    H.write_results(out, f"kernels_{family}", cmd, lines, dict(data, family=family, winners=winners, rows=rows))
    _plot_versions(out, family, rows, data)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _plot_main(out: str, rows: list, data: dict) -> None:
    import numpy as np

    plt = _plt()
    labels = [f"{r['family']}\n{'x'.join(map(str, r['shape']))}{' ' + r['variant'] if r['variant'] else ''}"
              f"\n{r['pass']}" for r in rows]
    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(8, len(rows) * 1.0), 5))
    for k, (impl, name, col) in enumerate((("reference", "NumPy reference", "#999999"), ("minillm", "minillm (Numba)",
                                            "#1f77b4"), ("torch", "PyTorch CPU", "#ff7f0e"))):
        ax.bar(x + (k - 1) * 0.27, [r["impls"].get(impl, {}).get("ms", np.nan) for r in rows], 0.27, label=name,
               color=col)
    ax.set_yscale("log")
    ax.set_ylabel("ms per call (log scale, lower is better)")
    ax.set_xticks(x, labels, fontsize=6)
    ax.set_title(f"minillm kernels, {data['threads']} threads, each engine in its own processes")
    ax.legend()
    fig.tight_layout()
    fig.savefig(os.path.join(out, "kernels.png"), dpi=110)
    plt.close(fig)


def _plot_versions(out: str, family: str, rows: list, data: dict) -> None:
    """Roofline-style: the achieved rate of each implementation, under the machine's line for that case."""
    import numpy as np

    plt = _plt()
    impls = [i for i in ("reference", *version_names(data), "torch") if any(i in r["impls"] for r in rows)]
    colours = {"reference": "#999999", "torch": "#ff7f0e"}
    blues = plt.cm.Blues(np.linspace(0.45, 0.95, max(1, len(impls) - 2)))
    for k, i in enumerate([i for i in impls if i not in colours]):
        colours[i] = blues[k]
    fig, ax = plt.subplots(figsize=(max(7, 1.6 * len(rows) + 3.5), 4.5))
    width = 0.8 / len(impls)
    x = np.arange(len(rows))
    for k, impl in enumerate(impls):
        ax.bar(x + (k - (len(impls) - 1) / 2) * width, [r["impls"].get(impl, {}).get("rate", np.nan) for r in rows],
               width, label={"reference": "NumPy reference", "torch": "PyTorch"}.get(impl, impl), color=colours[impl])
    for j, r in enumerate(rows):
        ax.hlines(r["line"], j - 0.45, j + 0.45, colors="k", linestyles="--", linewidth=1)
    unit = rows[0]["unit"] if rows else ""
    line_name = "float32 matmul" if unit == "GFLOP/s" else "memory bandwidth"
    ax.plot([], [], "k--", linewidth=1, label=f"machine: {line_name}")
    ax.set_yscale("log")
    ax.set_ylabel(f"achieved {unit} (log scale, higher is better)")
    ax.set_xticks(x, [f"{'x'.join(map(str, r['shape']))}{' ' + r['variant'] if r['variant'] else ''}\n{r['pass']}"
                      for r in rows], fontsize=7)
    ax.set_title(f"{family}: every version against the machine's line, {data['threads']} threads")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    fig.savefig(os.path.join(out, f"kernels_{family}.png"), dpi=110)
    plt.close(fig)
