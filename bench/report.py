#!/usr/bin/env python3
"""Turn bench/run.sh's results.json into report.md, gnuplot data and
scripts, and PNG plots.

    python3 bench/report.py RESULTS.json [--out DIR] [--no-plots]

DIR defaults to the directory of RESULTS.json.  Writes DIR/report.md and
DIR/plots/*.dat, *.gp, and (when gnuplot is installed) *.png.

Statistics are taken over the repetitions that migrated (ok); every table
row says how many of how many that is.  Ratios compare medians of the same
cell (link, memory, disk, files) measured in the same run.  Nothing here
ever reports a single timing as a result.  Standard library only.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys

MIB = 1 << 20
DASH = "—"


# ------------------------------------------------------------------ numbers
def stats(values):
    """median, min, max of the values that are not None (or None)."""
    v = [x for x in values if x is not None]
    if not v:
        return None
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)}


def fmt(x, kind):
    if x is None:
        return DASH
    if kind == "ms":
        return str(int(x)) if float(x).is_integer() else "%.1f" % x
    if kind == "ratio":
        return "%.2f" % x
    if kind == "mib":
        return "%.1f" % x
    if kind == "cpu":
        return "%.2f" % x
    if kind == "share":
        return "%.3f" % x
    if kind == "mbit":
        return "%.0f" % x
    return str(x)


def cell_key(r):
    return (r["link"], r["files"], r["mem_mib"], r["disk_mib"])


def method_order(doc):
    ms = list(doc.get("grid", {}).get("methods") or [])
    for r in doc.get("runs", []):
        if r["method"] not in ms:
            ms.append(r["method"])
    return ms


def cells(doc):
    """Cells in grid order: link, files, mem, disk (as measured)."""
    g = doc.get("grid", {})
    order = {
        "link": {v: i for i, v in enumerate(g.get("links", []))},
        "files": {v: i for i, v in enumerate(g.get("files", []))},
    }
    keys = {cell_key(r) for r in doc.get("runs", [])}
    return sorted(keys, key=lambda k: (order["link"].get(k[0], 99), k[0],
                                       order["files"].get(k[1], 99), k[1], k[2], k[3]))


def summarize(doc):
    """{(cell, method): summary} over every run of that cell and method."""
    out = {}
    groups = {}
    for r in doc.get("runs", []):
        groups.setdefault((cell_key(r), r["method"]), []).append(r)
    for key, rs in groups.items():
        ok = [r for r in rs if r.get("ok")]

        def col(f):
            return [f(r) for r in ok]

        def share(r):
            w, d = r.get("bytes_wire"), r.get("data_bytes")
            return w / d if w is not None and d else None

        def hwm(h):
            # voyagerd's peak means something only while it did the work
            def f(r):
                if not r["method"].startswith("voyager"):
                    return None
                v = (r.get("voyagerd_hwm_kib") or {}).get(h)
                return v / 1024 if v is not None else None
            return f

        out[key] = {
            "runs": len(rs),
            "ok": len(ok),
            "memory_intact": sum(1 for r in ok if r.get("memory_intact")),
            "downtime_ms": stats(col(lambda r: r.get("downtime_ms"))),
            "total_ms": stats(col(lambda r: r.get("total_ms"))),
            "wire_mib": stats(col(lambda r: None if r.get("bytes_wire") is None else r["bytes_wire"] / MIB)),
            "wire_share": stats(col(share)),
            "cpu_a": stats(col(lambda r: (r.get("cpu_s") or {}).get("a"))),
            "cpu_b": stats(col(lambda r: (r.get("cpu_s") or {}).get("b"))),
            "hwm_a": stats(col(hwm("a"))),
            "hwm_b": stats(col(hwm("b"))),
        }
    return out


def ratio(summ, cell, method, base, field="downtime_ms"):
    a = summ.get((cell, method), {}).get(field)
    b = summ.get((cell, base), {}).get(field)
    if not a or not b or not b["median"]:
        return None
    return a["median"] / b["median"]


# ------------------------------------------------------------------ tables
def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines


def med3(s, kind):
    if not s:
        return [DASH, DASH, DASH]
    return [fmt(s["median"], kind), fmt(s["min"], kind), fmt(s["max"], kind)]


def baselines(doc):
    ms = method_order(doc)
    out = []
    base = doc.get("baseline", "manual-runc")
    if base in ms:
        out.append(base)
    if "podman" in ms and (doc.get("podman") or {}).get("ran", True) and "podman" != base:
        out.append("podman")
    return out


def headline_table(doc, summ=None):
    summ = summarize(doc) if summ is None else summ
    bases = baselines(doc)
    header = ["link", "mem MiB", "disk MiB", "files", "method", "ok/runs",
              "downtime median ms", "min", "max", "total median ms", "min", "max"]
    header += ["downtime ÷ %s" % b for b in bases]
    header += ["memory intact"]
    rows = []
    for c in cells(doc):
        for m in method_order(doc):
            s = summ.get((c, m))
            if s is None:
                continue
            row = [c[0], str(c[2]), str(c[3]), str(c[1]), m, "%d/%d" % (s["ok"], s["runs"])]
            row += med3(s["downtime_ms"], "ms") + med3(s["total_ms"], "ms")
            row += [fmt(ratio(summ, c, m, b), "ratio") for b in bases]
            row += ["%d/%d" % (s["memory_intact"], s["ok"])]
            rows.append(row)
    return table(header, rows)


def resource_table(doc, summ=None):
    summ = summarize(doc) if summ is None else summ
    header = ["link", "mem MiB", "disk MiB", "files", "method", "ok/runs",
              "wire MiB median", "min", "max", "wire ÷ data median",
              "CPU s a median", "min", "max", "CPU s b median", "min", "max",
              "voyagerd peak RSS MiB a (median)", "b (median)", "client pause"]
    rows = []
    for c in cells(doc):
        for m in method_order(doc):
            s = summ.get((c, m))
            if s is None:
                continue
            row = [c[0], str(c[2]), str(c[3]), str(c[1]), m, "%d/%d" % (s["ok"], s["runs"])]
            row += med3(s["wire_mib"], "mib")
            row += [fmt(s["wire_share"]["median"] if s["wire_share"] else None, "share")]
            row += med3(s["cpu_a"], "cpu") + med3(s["cpu_b"], "cpu")
            row += [fmt(s["hwm_a"]["median"] if s["hwm_a"] else None, "mib"),
                    fmt(s["hwm_b"]["median"] if s["hwm_b"] else None, "mib")]
            row += ["not measured"]
            rows.append(row)
    return table(header, rows)


def phase_table(doc):
    """Median ms per phase, in the order the method reports them."""
    groups = {}
    for r in doc.get("runs", []):
        if r.get("ok") and r.get("phases_ms"):
            groups.setdefault((cell_key(r), r["method"]), []).append(r["phases_ms"])
    rows = []
    for c in cells(doc):
        for m in method_order(doc):
            ps = groups.get((c, m))
            if not ps:
                continue
            names = []
            for p in ps:
                names += [k for k in p if k not in names]
            parts = ["%s %s" % (k, fmt(stats([p.get(k) for p in ps])["median"], "ms"))
                     for k in names if stats([p.get(k) for p in ps])]
            rows.append([c[0], str(c[2]), str(c[3]), str(c[1]), m, str(len(ps)), ", ".join(parts)])
    return table(["link", "mem MiB", "disk MiB", "files", "method", "runs", "phases, median ms"], rows)


def link_table(doc):
    by = {}
    for l in doc.get("links", []):
        by.setdefault(l["link"], []).append(l)
    rows = []
    for link in doc.get("grid", {}).get("links", []) or sorted(by):
        ls = by.get(link, [])
        s = stats([None if l.get("iperf3_bps") is None else l["iperf3_bps"] / 1e6 for l in ls])
        errs = sorted({l["error"] for l in ls if l.get("error")})
        rows.append([link, "%d/%d" % (s["n"] if s else 0, len(ls))] + med3(s, "mbit") +
                    ["; ".join(errs) if errs else ""])
    return table(["link", "samples ok", "iperf3 a→b median Mbit/s", "min", "max", "errors"], rows)


# ------------------------------------------------------------------ plots
COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b"]


def safe(s):
    return "".join(ch if ch.isalnum() else "-" for ch in str(s))


def plot_specs(doc, summ):
    """Plots made only from measured points.  For each link and file
    count: downtime vs disk size (one series per method and memory size)
    and downtime vs memory size (one per method and disk size), each
    point the median with min-max bars; only when the x axis has at least
    two measured values."""
    specs = []
    ms = method_order(doc)
    cs = cells(doc)
    links = []
    for c in cs:
        if (c[0], c[1]) not in links:
            links.append((c[0], c[1]))
    for link, files in links:
        for xname, xi, oname, oi in (("disk", 3, "mem", 2), ("mem", 2, "disk", 3)):
            series = []
            others = sorted({c[oi] for c in cs if c[0] == link and c[1] == files})
            for m in ms:
                for o in others:
                    pts = []
                    for c in cs:
                        if c[0] != link or c[1] != files or c[oi] != o:
                            continue
                        s = summ.get((c, m))
                        if s and s["downtime_ms"]:
                            d = s["downtime_ms"]
                            pts.append((c[xi], d["median"] / 1000, d["min"] / 1000, d["max"] / 1000))
                    if pts:
                        series.append({"method": m, "other": o, "points": sorted(pts)})
            xs = {p[0] for s in series for p in s["points"]}
            if len(xs) < 2:
                continue
            name = "downtime_vs_%s_%s_f%s" % (xname, safe(link), files)
            specs.append({"name": name, "x": xname, "other": oname, "link": link, "files": files,
                          "series": series, "methods": ms})
    return specs


def write_plots(doc, outdir, summ=None, run_gnuplot=True):
    summ = summarize(doc) if summ is None else summ
    pdir = os.path.join(outdir, "plots")
    os.makedirs(pdir, exist_ok=True)
    made = []
    gp = shutil.which("gnuplot") if run_gnuplot else None
    term = "pngcairo size 1000,650 font ',11'"
    if gp:
        t = subprocess.run([gp, "-e", "set terminal"], capture_output=True, text=True)
        if "pngcairo" not in (t.stdout + t.stderr):
            term = "png size 1000,650"
    for sp in plot_specs(doc, summ):
        dat = os.path.join(pdir, sp["name"] + ".dat")
        with open(dat, "w") as f:
            for i, s in enumerate(sp["series"]):
                f.write("# %s, %s %s MiB: %s MiB, downtime s median, min, max\n" % (
                    s["method"], sp["other"], s["other"], sp["x"]))
                for p in s["points"]:
                    f.write("%s %.3f %.3f %.3f\n" % p)
                f.write("\n\n")
        others = sorted({s["other"] for s in sp["series"]})
        plots = []
        for i, s in enumerate(sp["series"]):
            col = COLORS[sp["methods"].index(s["method"]) % len(COLORS)]
            dt = others.index(s["other"]) + 1
            plots.append("'%s.dat' index %d using 1:2:3:4 with yerrorlines lc rgb '%s' dt %d lw 2 pt %d "
                         "title '%s, %s %s MiB'" % (sp["name"], i, col, dt, 7, s["method"], sp["other"], s["other"]))
        title = "Downtime vs %s size (link %s, %s files; median of %s reps, bars min-max)" % (
            "disk" if sp["x"] == "disk" else "memory", sp["link"], sp["files"], doc.get("grid", {}).get("reps", "?"))
        script = "\n".join([
            "set terminal %s" % term,
            "set output '%s.png'" % sp["name"],
            "set title \"%s\"" % title,
            "set xlabel '%s size (MiB)'" % ("container disk (rootfs data)" if sp["x"] == "disk" else "container memory"),
            "set ylabel 'downtime (s)'",
            "set key top left",
            "set grid",
            "set yrange [0:*]",
            "set xrange [0:*]",
    "set offsets 0, graph 0.04, graph 0.05, 0",
            "plot " + ", \\\n     ".join(plots),
            ""])
        gpf = os.path.join(pdir, sp["name"] + ".gp")
        with open(gpf, "w") as f:
            f.write(script)
        png = os.path.join(pdir, sp["name"] + ".png")
        if gp:
            r = subprocess.run([gp, sp["name"] + ".gp"], cwd=pdir, capture_output=True, text=True)
            if r.returncode != 0 or not os.path.exists(png):
                sys.stderr.write("report: gnuplot failed on %s: %s\n" % (gpf, r.stderr.strip()))
                png = None
        else:
            png = None
        made.append({"name": sp["name"], "png": png, "gp": gpf, "dat": dat})
    return made


# ------------------------------------------------------------------ report
def render(doc, plots=()):
    summ = summarize(doc)
    g = doc.get("grid", {})
    h = doc.get("host", {})
    runs = doc.get("runs", [])
    failed = [r for r in runs if not r.get("ok")]
    not_intact = [r for r in runs if r.get("ok") and not r.get("memory_intact")]
    md = ["# Voyager benchmark: %s profile" % doc.get("profile", "?"), ""]
    md.append("Run %s to %s. Host: kernel %s, %s CPUs, %s MiB memory; %s; %s%s; %s." % (
        doc.get("started"), doc.get("finished"), h.get("kernel"), h.get("cpus"), h.get("mem_mib"),
        h.get("criu"), h.get("runc"), (", " + h["podman"]) if h.get("podman") else "", h.get("voyager")))
    if h.get("voyager_build") or h.get("bench_checkout"):
        md.append("Voyager binaries from %s; harness checkout %s." % (
            h.get("voyager_build", "?"), h.get("bench_checkout", "?")))
    md.append("")
    md.append("Grid: memory %s MiB × disk %s MiB × files %s × links %s; %s repetitions per method, "
              "method order rotating with the repetition. Methods: %s. %d runs, %d failed%s." % (
                  g.get("mem_mib"), g.get("disk_mib"), g.get("files"), g.get("links"), g.get("reps"),
                  ", ".join(method_order(doc)), len(runs), len(failed),
                  (", %d migrated with memory NOT intact" % len(not_intact)) if not_intact else ""))
    md.append("")
    md.append("Statistics are over the repetitions that migrated (the *ok/runs* column); "
              "ratios divide this method's median by the baseline's median in the same cell, measured "
              "in the same run and lab. Times in ms.")
    md.append("")
    pm = doc.get("podman") or {}
    if not pm.get("ran", False):
        md.append("**Podman baseline not run:** %s" % (pm.get("why_not") or "unknown reason"))
        md.append("")
    md.append("## Downtime and total time")
    md.append("")
    md += headline_table(doc, summ)
    md.append("")
    md.append("## Bytes, CPU and memory")
    md.append("")
    md += resource_table(doc, summ)
    md.append("")
    md.append("## Where the time goes")
    md.append("")
    md += phase_table(doc)
    md.append("")
    md.append("## The link")
    md.append("")
    md += link_table(doc)
    md.append("")
    sk = doc.get("skipped", [])
    if sk:
        md.append("## Cells refused by the sanity check")
        md.append("")
        for s in sk:
            md.append("- mem %s MiB, disk %s MiB, files %s, link %s: %s" % (
                s.get("mem_mib"), s.get("disk_mib"), s.get("files"), s.get("link"), s.get("reason")))
        md.append("")
    if failed or not_intact:
        md.append("## Failed runs")
        md.append("")
        for r in failed:
            e = r.get("error")
            if isinstance(e, dict):
                e = "%s: %s" % (e.get("phase"), e.get("message"))
            md.append("- %s, link %s, mem %s, disk %s, files %s, rep %s: result %s: %s" % (
                r["method"], r["link"], r["mem_mib"], r["disk_mib"], r["files"], r.get("rep"),
                r.get("result"), e))
        for r in not_intact:
            md.append("- %s, link %s, mem %s, disk %s, files %s, rep %s: migrated but memory check FAILED" % (
                r["method"], r["link"], r["mem_mib"], r["disk_mib"], r["files"], r.get("rep")))
        md.append("")
    if plots:
        md.append("## Plots")
        md.append("")
        for p in plots:
            if p.get("png"):
                md.append("![%s](plots/%s.png)" % (p["name"], p["name"]))
            else:
                md.append("- %s: data and script in plots/ (gnuplot did not make the PNG)" % p["name"])
        md.append("")
    md.append("## What the numbers are")
    md.append("")
    defs = doc.get("definitions", {})
    for k in ("downtime_ms", "total_ms", "bytes_wire"):
        d = defs.get(k)
        if isinstance(d, dict):
            md.append("- **%s**: %s" % (k, "; ".join("%s: %s" % (m, t) for m, t in d.items())))
    for k in ("data_bytes", "podman_image", "cpu_s", "voyagerd_cpu_s", "voyagerd_hwm_kib", "client_pause_ms"):
        if k in defs:
            md.append("- **%s**: %s" % (k, defs[k]))
    for n in doc.get("notes", []):
        md.append("- %s" % n)
    md.append("")
    return "\n".join(md)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("results")
    ap.add_argument("--out")
    ap.add_argument("--no-plots", action="store_true")
    a = ap.parse_args(argv)
    with open(a.results) as f:
        doc = json.load(f)
    out = a.out or os.path.dirname(os.path.abspath(a.results))
    os.makedirs(out, exist_ok=True)
    plots = [] if a.no_plots else write_plots(doc, out)
    text = render(doc, plots)
    with open(os.path.join(out, "report.md"), "w") as f:
        f.write(text)
    print(os.path.join(out, "report.md"))
    for p in plots:
        print(p["png"] or p["gp"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
