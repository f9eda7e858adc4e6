"""The "Federation (voyager-fs vs native)" section of bench/run.sh's report.

bench/run.sh runs `bench/jit.sh --parts fio,meta` after its grid and puts
what it wrote (jit.json) into results.json under "federation", with the
command, its exit status and why it did not run when it did not.  This
module turns that into report.md's table: fio bandwidth and find + stat
scan times through voyager-fs against the very same files in its backing
directory, medians and ranges over the repetitions, the ratio of the
medians, and issue 6's goals (fio at least 0.95 of native, scans at most
1.10).  The statistics are taken from jit.sh's raw rows here, not from its
own summary, so that the tests can feed known rows.  Standard library only.
"""
import statistics

DASH = "—"
FIO_GOAL = 0.95   # voyager-fs bandwidth / native bandwidth, at least
SCAN_GOAL = 1.10  # voyager-fs time / native time, at most

FIO_JOBS = (("seqread", "fio sequential read 1 MiB, cold"),
            ("seqread-warm", "fio sequential read 1 MiB, warm"),
            ("seqread-direct", "fio sequential read 512 KiB, O_DIRECT"),
            ("randread", "fio random read 4 KiB, cold"),
            ("randwrite", "fio random write 4 KiB, buffered"),
            ("randwrite-direct", "fio random write 4 KiB, O_DIRECT"))
STATES = (("hydrating", "before hydration: held to 256 KB/s"),
          ("hydrated", "after independence"))
FIO_STATES = (("local", "hydration held to 1 KB/s, data already local"),
              ("independent", "after independence"))


def _stats(values):
    v = [x for x in values if x is not None]
    if not v:
        return None
    return {"median": statistics.median(v), "min": min(v), "max": max(v), "n": len(v)}


def _num(x, digits):
    return ("%%.%df" % digits) % x


def _rng(s, scale, digits):
    if not s:
        return DASH
    return "%s (%s-%s)" % (_num(s["median"] / scale, digits), _num(s["min"] / scale, digits),
                           _num(s["max"] / scale, digits))


def _ratio_text(r, goal):
    """Two decimals, or three where two would show the goal itself on the
    wrong side of it (0.946 is not "0.95" against a goal of 0.95)."""
    if r is None:
        return DASH
    t = "%.2f" % r
    return "%.3f" % r if t == "%.2f" % goal and r != goal else t


def _verdict(r, goal, at_least):
    if r is None:
        return DASH
    return "yes" if (r >= goal if at_least else r <= goal) else "**no**"


def paired_ratio(fio, job, state):
    """Per repetition: the mean bandwidth of its voyager-fs jobs over the
    mean of its native ones (they ran next to each other), as
    {median, min, max, n} over the repetitions that have both; None when
    none has."""
    prs = []
    for rep in sorted({r.get("rep") for r in fio}):
        sel = [r for r in fio if r.get("job") == job and r.get("rep") == rep and
               r.get("state", "independent") == state and r.get("bw_bytes")]
        fs = [r["bw_bytes"] for r in sel if r.get("target") == "voyager-fs"]
        nat = [r["bw_bytes"] for r in sel if r.get("target") == "native"]
        if fs and nat:
            prs.append(round(statistics.mean(fs) / statistics.mean(nat), 3))
    return _stats(prs)


def complete_scans(scans):
    """Split scan rows into (complete, incomplete): a voyager-fs scan that saw
    fewer entries than the native scan of the same state, cache and
    repetition (say, EMFILE part-way) does not count."""
    native = {(r.get("files"), r.get("state"), r.get("cache"), r.get("rep")): r.get("entries")
              for r in scans if r.get("target") == "native"}
    good, bad = [], []
    for r in scans:
        key = (r.get("files"), r.get("state"), r.get("cache"), r.get("rep"))
        ok = r.get("us") is not None and (r.get("target") == "native" or r.get("entries") == native.get(key))
        (good if ok else bad).append(r)
    return good, bad


def _local_share(jit, state):
    """Share of the bytes local when the hydrating scans began, or None."""
    for m in (jit.get("meta") or {}).values():
        s = (m or {}).get("status_before_scans") if state == "hydrating" else None
        if s and s.get("bytes_total"):
            return s.get("bytes_present", 0) / s["bytes_total"]
    return None


def federation_rows(jit):
    """Table rows (lists of cells) from jit.sh's JSON document."""
    rows = []
    fio = jit.get("fio") or []
    for (job, what), (state, when) in ((j, s) for s in FIO_STATES for j in FIO_JOBS):
        sel = [r for r in fio if r.get("job") == job and r.get("state", "independent") == state]
        fs = _stats([r.get("bw_bytes") for r in sel if r.get("target") == "voyager-fs"])
        nat = _stats([r.get("bw_bytes") for r in sel if r.get("target") == "native"])
        if not fs and not nat:
            continue
        r = fs["median"] / nat["median"] if fs and nat and nat["median"] else None
        rows.append([what, when, "MiB/s", _rng(fs, 1 << 20, 1), _rng(nat, 1 << 20, 1),
                     "%d/%d" % (fs["n"] if fs else 0, nat["n"] if nat else 0),
                     _ratio_text(r, FIO_GOAL), "≥ %.2f" % FIO_GOAL, _verdict(r, FIO_GOAL, True)])
    good, _ = complete_scans(jit.get("scans") or [])
    for n in sorted({r.get("files") for r in good if r.get("files") is not None}, reverse=True):
        for state, when in STATES:
            share = _local_share(jit, state)
            if share is not None:
                when = "%s, %.0f %% of the bytes local" % (when, 100.0 * share)
            for cache in ("cold", "warm"):
                sel = [r for r in good if r.get("files") == n and r.get("state") == state and r.get("cache") == cache]
                fs = _stats([r["us"] for r in sel if r.get("target") == "voyager-fs"])
                nat = _stats([r["us"] for r in sel if r.get("target") == "native"])
                if not fs and not nat:
                    continue
                r = fs["median"] / nat["median"] if fs and nat and nat["median"] else None
                rows.append(["find + stat, %d files, %s" % (n, cache), when, "ms",
                             _rng(fs, 1000, 0), _rng(nat, 1000, 0),
                             "%d/%d" % (fs["n"] if fs else 0, nat["n"] if nat else 0),
                             _ratio_text(r, SCAN_GOAL), "≤ %.2f" % SCAN_GOAL,
                             _verdict(r, SCAN_GOAL, False)])
    return rows


def federation_problems(fed):
    """Lines naming what failed or was left out."""
    out = []
    jit = fed.get("jit") or {}
    rc = fed.get("exit_status")
    if rc not in (None, 0):
        out.append("bench/jit.sh exited with status %s (%s)" % (
            rc, "timed out" if fed.get("timed_out") else "a migration or measurement failed, or it broke; see %s"
            % (fed.get("log") or "its log")))
    if fed.get("error"):
        out.append(fed["error"])
    for r in jit.get("runs") or []:
        if not r.get("ok"):
            out.append("migration %s/%s rep %s failed: %s" % (r.get("mode"), r.get("kind"), r.get("rep"),
                                                             r.get("error") or r.get("result")))
    for r in jit.get("fio") or []:
        if r.get("bw_bytes") is None:
            out.append("fio %s %s (%s) rep %s: %s" % (r.get("job"), r.get("target"), r.get("state", "independent"),
                                                     r.get("rep"), r.get("error")))
    _, bad = complete_scans(jit.get("scans") or [])
    for r in bad:
        out.append("scan %s files, %s, %s, %s rep %s left out: %s entries" % (
            r.get("files"), r.get("state"), r.get("cache"), r.get("target"), r.get("rep"), r.get("entries")))
    return out


def federation_section(doc):
    """report.md lines for doc["federation"] ([] when the key is absent)."""
    fed = doc.get("federation")
    if fed is None:
        return []
    md = ["## Federation (voyager-fs vs native)", ""]
    if not fed.get("ran"):
        md += ["Not run: %s" % (fed.get("why_not") or "no reason recorded"), ""]
        return md
    jit = fed.get("jit")
    if not jit:
        md += ["`%s`, in a lab of its own after the grid." % fed.get("command", "bench/jit.sh"), "",
               "**Not measured**: bench/jit.sh wrote no results.", ""]
        return md + _failures(fed)
    p = jit.get("params") or {}
    md.append("`%s`, in a lab of its own after the grid. fio (psync, iodepth 1) over the migrated files "
              "(%s MiB in 256 MiB files) and `find ROOT -xdev -print0 | xargs -0 stat` over the whole rootfs "
              "with %s small files, each through the voyager-fs mount and over the same files in its backing "
              "directory (native), in b's mount namespace; link %s, %s repetition(s), each in both orders; "
              "randread and randwrite run %s s. Values: median (min-max); n: voyager-fs/native runs; ratio: "
              "voyager-fs ÷ native of the medians (bandwidth for fio, time for scans). *cold*: after "
              "`echo 2 > /proc/sys/vm/drop_caches`; *warm*: the same scan right after." % (
                  fed.get("command", "bench/jit.sh"), p.get("disk_mib", "?"), p.get("meta_files", "?"),
                  p.get("rate", "?"), p.get("runs", "?"), p.get("fio_s", "?")))
    md.append("")
    rows = federation_rows(jit)
    header = ["measurement", "when", "unit", "voyager-fs", "native", "n", "ratio", "goal", "met"]
    md += ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    md += ["| " + " | ".join(r) + " |" for r in rows]
    md.append("")
    md.append("Before hydration, the scans run while voyager-fs's background hydration is held to "
              "256 KB/s: cold, every entry is a lookup through voyager-fs; warm, the metadata is already "
              "local in the kernel's caches. fio runs on a container of its own, migrated with its "
              "background hydration held to 1 KB/s: its files are read once through the mount (demand "
              "fetches), the jobs run on that data already local while hydration of the rest is held, "
              "then the limit is lifted and, once independent, they run again.")
    md.append("")
    return md + _failures(fed)


def _failures(fed):
    probs = federation_problems(fed)
    if not probs:
        return []
    return ["**Federation part: failures**", ""] + ["- %s" % x for x in probs] + [""]
