#!/usr/bin/env python3
"""Turn bench/run.sh's results.json into report.md, gnuplot data and
scripts, and PNG plots.

    python3 bench/report.py RESULTS.json [--out DIR] [--no-plots]

DIR defaults to the directory of RESULTS.json.  Writes DIR/report.md and
DIR/plots/*.dat, *.gp, and (when gnuplot is installed) *.png.  The
federation section (voyager-fs vs native, from bench/jit.sh) is made by
bench/federation.py.

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

import federation

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
            w, d = wire_bytes(r), r.get("data_bytes")
            return w / d if w is not None and d else None

        def hwm(h):
            # voyagerd's peak means something only while it did the work
            def f(r):
                if not r["method"].startswith("voyager"):
                    return None
                v = (r.get("voyagerd_hwm_kib") or {}).get(h)
                return v / 1024 if v is not None else None
            return f

        jit = [r for r in ok if "jit" in r]

        def hyd(f):
            def g(r):
                h = (r.get("jit") or {}).get("hydration") or {}
                return f(h) if h.get("bytes") is not None and h.get("ms") else None
            return [g(r) for r in jit]

        def resume_to_indep(r):
            j = r["jit"]
            t0 = j.get("resume_ms") if j.get("resume_ms") is not None else j.get("cli_return_ms")
            i = r.get("independence_ms")
            return i - t0 if i is not None and t0 is not None else None

        def hwm_range(h):
            return stats(col(hwm(h)))

        out[key] = {
            "runs": len(rs),
            "jit": len(jit),
            "independent": sum(1 for r in jit if r.get("independent")),
            "indep_ms": stats(col(independence)),
            "indep_how": "journal" if jit else "total",
            "resume_indep_ms": stats([resume_to_indep(r) for r in jit]),
            "hyd_mib": stats(hyd(lambda h: h["bytes"] / MIB)),
            "hyd_ms": stats(hyd(lambda h: h["ms"])),
            "hyd_bps": stats([sampled_rate(r) for r in jit]),
            "samples": stats([len(r["jit"].get("samples") or []) for r in jit]),
            "hwm_a_range": hwm_range("a"),
            "hwm_b_range": hwm_range("b"),
            "fs_hwm": stats(col(lambda r: None if not r.get("voyager_fs_hwm_kib")
                                else r["voyager_fs_hwm_kib"]["sum"] / 1024)),
            "fs_n": stats(col(lambda r: None if not r.get("voyager_fs_hwm_kib")
                              else r["voyager_fs_hwm_kib"]["n"])),
            "ok": len(ok),
            "memory_intact": sum(1 for r in ok if r.get("memory_intact")),
            "downtime_ms": stats(col(lambda r: r.get("downtime_ms"))),
            "total_ms": stats(col(lambda r: r.get("total_ms"))),
            "wire_mib": stats(col(lambda r: None if wire_bytes(r) is None else wire_bytes(r) / MIB)),
            "wire_share": stats(col(share)),
            "cpu_a": stats(col(lambda r: (r.get("cpu_s") or {}).get("a"))),
            "cpu_b": stats(col(lambda r: (r.get("cpu_s") or {}).get("b"))),
            "hwm_a": stats(col(hwm("a"))),
            "hwm_b": stats(col(hwm("b"))),
        }
    return out


def wire_bytes(r):
    """Bytes the migration moved: a jit run's report counts only what went
    before it, so the bytes the source served while hydrating are added
    (None until the source was released and counted them)."""
    w = r.get("bytes_wire")
    if "jit" not in r or w is None:
        return w
    served = r["jit"].get("served_bytes")
    return None if served is None else w + served


def sampled_rate(r):
    """bits/s a jit run hydrated at, seen from the target's status: from the
    first sample (bytes local then) to the journal's independent phase (all
    of its hydration bytes); None without a sample strictly before it.
    Not bytes ÷ the journal's ms: much can arrive before the commit."""
    j = r.get("jit") or {}
    h = j.get("hydration") or {}
    end = j.get("independent_phase_ms")
    s = [x for x in j.get("samples") or [] if x.get("bytes") is not None]
    if not s or end is None or h.get("bytes") is None or end <= s[0]["t_ms"] or h["bytes"] <= s[0]["bytes"]:
        return None
    return (h["bytes"] - s[0]["bytes"]) * 8 * 1000 / (end - s[0]["t_ms"])


def independence(r):
    """ms from the request until the target holds everything and the source
    is let go: a jit run's measured independence_ms (None if it never got
    there), any other method's total_ms."""
    return r.get("independence_ms") if "jit" in r else r.get("total_ms")


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


def independence_table(doc, summ=None):
    """Time to independence for every method, with the baselines' ratios
    (for stop-and-copy methods it is their total time)."""
    summ = summarize(doc) if summ is None else summ
    bases = baselines(doc)
    header = ["link", "mem MiB", "disk MiB", "files", "method", "ok/runs", "independent/ok",
              "to independence median ms", "min", "max"]
    header += ["÷ %s" % b for b in bases]
    header += ["resume → independent median ms", "min", "max", "measured as"]
    rows = []
    for c in cells(doc):
        for m in method_order(doc):
            s = summ.get((c, m))
            if s is None:
                continue
            jit = s["jit"] > 0
            row = [c[0], str(c[2]), str(c[3]), str(c[1]), m, "%d/%d" % (s["ok"], s["runs"]),
                   "%d/%d" % (s["independent"], s["jit"]) if jit else "%d/%d" % (s["ok"], s["ok"])]
            row += med3(s["indep_ms"], "ms")
            row += [fmt(ratio(summ, c, m, b, "indep_ms"), "ratio") for b in bases]
            row += med3(s["resume_indep_ms"], "ms") if jit else [DASH] * 3
            row += ["journal migrated" if jit else "total"]
            rows.append(row)
    return table(header, rows)


def link_bps(doc):
    """{link: median iperf3 a→b bits per second}"""
    by = {}
    for l in doc.get("links", []):
        if l.get("iperf3_bps") is not None:
            by.setdefault(l["link"], []).append(l["iperf3_bps"])
    return {k: statistics.median(v) for k, v in by.items()}


def hydration_table(doc, summ=None):
    """jit runs: what hydrated, how long it took, at what rate."""
    summ = summarize(doc) if summ is None else summ
    bps = link_bps(doc)
    header = ["link", "mem MiB", "disk MiB", "files", "method", "independent/runs",
              "hydrated MiB median", "hydration median ms", "min", "max",
              "sampled rate median Mbit/s", "min", "max", "rate ÷ iperf3", "status samples median"]
    rows = []
    for c in cells(doc):
        for m in method_order(doc):
            s = summ.get((c, m))
            if s is None or not s["jit"]:
                continue
            r = s["hyd_bps"]
            mbit = {k: r[k] / 1e6 for k in ("median", "min", "max")} if r else None
            row = [c[0], str(c[2]), str(c[3]), str(c[1]), m, "%d/%d" % (s["independent"], s["runs"])]
            row += [fmt(s["hyd_mib"]["median"] if s["hyd_mib"] else None, "mib")]
            row += med3(s["hyd_ms"], "ms") + med3(mbit, "mbit")
            row += [fmt(r["median"] / bps[c[0]] if r and bps.get(c[0]) else None, "ratio")]
            row += [fmt(s["samples"]["median"] if s["samples"] else None, "ms")]
            rows.append(row)
    return table(header, rows)


def memory_table(doc, summ=None):
    """Peak memory (VmHWM) of Voyager's processes, read at the end of each
    run; ratios against voyager/stop-copy in the same cell."""
    summ = summarize(doc) if summ is None else summ
    ref = "voyager/stop-copy"
    header = ["link", "mem MiB", "disk MiB", "files", "method", "ok/runs",
              "voyagerd a MiB median", "min", "max", "voyagerd b MiB median", "min", "max",
              "voyager-fs b MiB median", "min", "max", "voyager-fs processes",
              "voyagerd b ÷ %s" % ref]
    rows = []
    for c in cells(doc):
        for m in method_order(doc):
            s = summ.get((c, m))
            if s is None or not m.startswith("voyager"):
                continue
            row = [c[0], str(c[2]), str(c[3]), str(c[1]), m, "%d/%d" % (s["ok"], s["runs"])]
            row += med3(s["hwm_a_range"], "mib") + med3(s["hwm_b_range"], "mib") + med3(s["fs_hwm"], "mib")
            row += [fmt(s["fs_n"]["median"] if s["fs_n"] else None, "ms")]
            row += [fmt(ratio(summ, c, m, ref, "hwm_b_range"), "ratio")]
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
            # a star grid moves this axis only at the first size of the other
            g = doc.get("grid", {})
            if g.get("design") == "star" and g.get("%s_mib" % oname):
                series = [s for s in series if s["other"] == g["%s_mib" % oname][0]]
            xs = {p[0] for s in series for p in s["points"]}
            if len(xs) < 2:
                continue
            name = "downtime_vs_%s_%s_f%s" % (xname, safe(link), files)
            specs.append({"name": name, "x": xname, "other": oname, "link": link, "files": files,
                          "series": series, "methods": ms})
    return specs


def hydration_specs(doc):
    """For each link and file count with jit runs: hydration progress after
    resume, one line per jit method and size (memory, disk): the samples of
    the repetition with the median time to independence (the lower one of
    an even count), then the journal's total at its independent phase.
    x: seconds since the target journal's committed phase; y: MiB local."""
    groups = {}
    for r in doc.get("runs", []):
        j = r.get("jit")
        if not r.get("ok") or not j or not r.get("independent") or r.get("independence_ms") is None:
            continue
        groups.setdefault(((r["link"], r["files"]), r["method"], (r["mem_mib"], r["disk_mib"])), []).append(r)
    specs = []
    links = []
    for c in cells(doc):
        if (c[0], c[1]) not in links:
            links.append((c[0], c[1]))
    for link, files in links:
        series = []
        for m in method_order(doc):
            sizes = sorted(k[2] for k in groups if k[0] == (link, files) and k[1] == m)
            for mem, disk in sizes:
                rs = sorted(groups[((link, files), m, (mem, disk))], key=lambda r: r["independence_ms"])
                r = rs[(len(rs) - 1) // 2]
                j = r["jit"]
                t0 = j.get("resume_ms") if j.get("resume_ms") is not None else j.get("cli_return_ms")
                pts = [((x["t_ms"] - t0) / 1000, x["bytes"] / MIB) for x in j.get("samples") or []
                       if x.get("bytes") is not None]
                h = j.get("hydration") or {}
                if j.get("independent_phase_ms") is not None and h.get("bytes") is not None:
                    pts.append(((j["independent_phase_ms"] - t0) / 1000, h["bytes"] / MIB))
                if not pts:
                    continue
                total = max([x.get("bytes_total") or 0 for x in j.get("samples") or []] + [h.get("bytes") or 0])
                series.append({"method": m, "mem": mem, "disk": disk, "rep": r.get("rep"),
                               "of": len(rs), "total_mib": total / MIB, "points": sorted(pts)})
        if series:
            specs.append({"name": "hydration_%s_f%s" % (safe(link), files), "link": link,
                          "files": files, "series": series})
    return specs


def gnuplot_term(gp):
    term = "pngcairo size 1000,650 font ',11'"
    if gp:
        t = subprocess.run([gp, "-e", "set terminal"], capture_output=True, text=True)
        if "pngcairo" not in (t.stdout + t.stderr):
            term = "png size 1000,650"
    return term


def gnuplot_png(gp, pdir, name, script):
    """Write NAME.gp; run gnuplot on it; the PNG's path, or None."""
    gpf = os.path.join(pdir, name + ".gp")
    with open(gpf, "w") as f:
        f.write(script)
    png = os.path.join(pdir, name + ".png")
    if not gp:
        return gpf, None
    r = subprocess.run([gp, name + ".gp"], cwd=pdir, capture_output=True, text=True)
    if r.returncode != 0 or not os.path.exists(png):
        sys.stderr.write("report: gnuplot failed on %s: %s\n" % (gpf, r.stderr.strip()))
        return gpf, None
    return gpf, png


def write_hydration_plots(doc, pdir, gp, term):
    made = []
    for sp in hydration_specs(doc):
        dat = os.path.join(pdir, sp["name"] + ".dat")
        plots = []
        with open(dat, "w") as f:
            for i, s in enumerate(sp["series"]):
                f.write("# %s, mem %s MiB, disk %s MiB, rep %s (median of %d): s since resume, MiB local\n" % (
                    s["method"], s["mem"], s["disk"], s["rep"], s["of"]))
                for p in s["points"]:
                    f.write("%.3f %.3f\n" % p)
                f.write("\n\n")
                plots.append("'%s.dat' index %d using 1:2 with linespoints lc rgb '%s' lw 2 pt 7 ps 0.6 "
                             "title '%s, mem %s MiB, disk %s MiB (%.0f MiB to hydrate)'" % (
                                 sp["name"], i, COLORS[i % len(COLORS)], s["method"], s["mem"], s["disk"],
                                 s["total_mib"]))
        title = ("Hydration progress over time after resume (link %s, %s files; per size the rep with "
                 "the median time to independence)" % (sp["link"], sp["files"]))
        script = "\n".join([
            "set terminal %s" % term,
            "set output '%s.png'" % sp["name"],
            "set title \"%s\" noenhanced" % title,
            "set xlabel 'seconds since the container resumed on the target (journal: committed)'",
            "set ylabel 'MiB local on the target (status: hydration.bytes)'",
            "set key bottom right noenhanced",
            "set grid",
            "set yrange [0:*]",
            "set xrange [0:*]",
            "set offsets 0, graph 0.04, graph 0.05, 0",
            "plot " + ", \\\n     ".join(plots),
            ""])
        gpf, png = gnuplot_png(gp, pdir, sp["name"], script)
        made.append({"name": sp["name"], "png": png, "gp": gpf, "dat": dat})
    return made


def write_plots(doc, outdir, summ=None, run_gnuplot=True):
    summ = summarize(doc) if summ is None else summ
    pdir = os.path.join(outdir, "plots")
    os.makedirs(pdir, exist_ok=True)
    made = []
    gp = shutil.which("gnuplot") if run_gnuplot else None
    term = gnuplot_term(gp)
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
        gpf, png = gnuplot_png(gp, pdir, sp["name"], script)
        made.append({"name": sp["name"], "png": png, "gp": gpf, "dat": dat})
    return made + write_hydration_plots(doc, pdir, gp, term)


# ------------------------------------------------------------------ report
def render(doc, plots=()):
    summ = summarize(doc)
    g = doc.get("grid", {})
    h = doc.get("host", {})
    runs = doc.get("runs", [])
    failed = [r for r in runs if not r.get("ok")]
    not_intact = [r for r in runs if r.get("ok") and not r.get("memory_intact")]
    not_indep = [r for r in runs if r.get("ok") and "jit" in r and not r.get("independent")]
    md = ["# Voyager benchmark: %s profile" % doc.get("profile", "?"), ""]
    md.append("Run %s to %s. Host: kernel %s, %s CPUs, %s MiB memory; %s; %s%s; %s." % (
        doc.get("started"), doc.get("finished"), h.get("kernel"), h.get("cpus"), h.get("mem_mib"),
        h.get("criu"), h.get("runc"), (", " + h["podman"]) if h.get("podman") else "", h.get("voyager")))
    if h.get("voyager_build") or h.get("bench_checkout"):
        md.append("Voyager binaries from %s; harness checkout %s." % (
            h.get("voyager_build") or "?", h.get("bench_checkout") or "not a git checkout"))
    md.append("")
    if g.get("design") == "star":
        grid = ("Grid (star: one axis at a time): memory %s MiB, disk %s MiB, files %s; cells (memory, disk, "
                "files) %s; links %s" % (g.get("mem_mib"), g.get("disk_mib"), g.get("files"),
                                         ", ".join("(%s, %s, %s)" % tuple(c) for c in g.get("cells") or []),
                                         g.get("links")))
    else:
        grid = "Grid: memory %s MiB × disk %s MiB × files %s × links %s" % (
            g.get("mem_mib"), g.get("disk_mib"), g.get("files"), g.get("links"))
    md.append("%s; %s repetitions per method, "
              "method order rotating with the repetition. Methods: %s. %d runs, %d failed%s." % (
                  grid, g.get("reps"),
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
    md.append("## Time to independence")
    md.append("")
    md.append("From the migrate request until the target holds every byte and the source has let go: for "
              "jit, until the target's journal says migrated (polled every 0.25 s); for the stop-and-copy "
              "methods, their total time. *resume → independent*: from the target journal's commit.")
    md.append("")
    md += independence_table(doc, summ)
    md.append("")
    if any(s["jit"] for s in summ.values()):
        md.append("## Hydration (jit)")
        md.append("")
        md.append("The target journal's hydration record at independence (bytes, and ms from the commit; "
                  "bytes that arrived before the commit count, their time does not). Rate: bytes that "
                  "arrived between the first status sample and the journal's independent phase ÷ that "
                  "time (the agent refreshes its status every 0.5 s, so short hydrations have no rate), "
                  "against the median iperf3 rate of the same link. `bench/jit.sh` measures the rate "
                  "from voyager-fs's own counters.")
        md.append("")
        md += hydration_table(doc, summ)
        md.append("")
    md.append("## Peak memory")
    md.append("")
    md.append("VmHWM at the end of each run (voyagerd's reset before it; voyager-fs: the sum over the "
              "container's trees, one process each).")
    md.append("")
    md += memory_table(doc, summ)
    md.append("")
    md.append("## Bytes, CPU and memory")
    md.append("")
    if any(s["jit"] for s in summ.values()):
        md.append("jit's wire bytes are the report's plus the file bytes the source served to the target "
                  "until it was released (its journal's served_bytes); its CPU seconds and peak memory "
                  "run until independence.")
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
    try:
        md += federation.federation_section(doc)
    except Exception as e:  # a broken federation record must not hide the rest
        md += ["## Federation (voyager-fs vs native)", "",
               "**Could not be reported**: %s: %s" % (type(e).__name__, e), ""]
    sk = doc.get("skipped", [])
    if sk:
        md.append("## Cells refused by the sanity check")
        md.append("")
        for s in sk:
            md.append("- mem %s MiB, disk %s MiB, files %s, link %s: %s" % (
                s.get("mem_mib"), s.get("disk_mib"), s.get("files"), s.get("link"), s.get("reason")))
        md.append("")
    if failed or not_intact or not_indep:
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
        for r in not_indep:
            j = r["jit"]
            md.append("- %s, link %s, mem %s, disk %s, files %s, rep %s: migrated but not independent "
                      "within %s s (target journal result: %s)" % (
                          r["method"], r["link"], r["mem_mib"], r["disk_mib"], r["files"], r.get("rep"),
                          j.get("wait_limit_s"), j.get("target_result")))
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
    for k in ("data_bytes", "podman_image", "cpu_s", "voyagerd_cpu_s", "voyagerd_hwm_kib", "independence_ms",
              "jit", "voyager_fs_hwm_kib", "client_pause_ms"):
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
