"""bench/report.py on known raw data: medians, ranges, ratios, counts."""
import json
import os
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import report  # noqa: E402

MIB = 1 << 20


def run(method, mem, disk, rep, downtime, total, wire, cpu_a=None, cpu_b=None, ok=True,
        intact=True, link="1gbit", files=1000, hwm=None, error=None):
    r = {"method": method, "link": link, "mem_mib": mem, "disk_mib": disk, "files": files,
         "rep": rep, "order": 1, "data_bytes": (mem + disk) * MIB, "ok": ok,
         "result": "migrated" if ok else "rolled-back", "memory_intact": intact,
         "downtime_ms": downtime, "total_ms": total, "bytes_wire": wire,
         "cpu_s": {"a": cpu_a, "b": cpu_b}, "error": error}
    if hwm:
        r["voyagerd_hwm_kib"] = {"a": hwm[0], "b": hwm[1]}
    return r


def doc():
    V, M, P = "voyager/stop-copy", "manual-runc", "podman"
    runs = [
        # cell 16/0: three reps each
        run(V, 16, 0, 1, 400, 900, 20 * MIB, 0.5, 0.25, hwm=(10240, 20480)),
        run(V, 16, 0, 2, 500, 1000, 22 * MIB, 0.7, 0.35, hwm=(12288, 20480)),
        run(V, 16, 0, 3, 450, 950, 21 * MIB, 0.6, 0.30, hwm=(11264, 22528)),
        run(M, 16, 0, 1, 800, 850, 18 * MIB, 1.0, 0.5, hwm=(9000, 9000)),
        run(M, 16, 0, 2, 1000, 1050, 18 * MIB, 1.2, 0.7),
        run(M, 16, 0, 3, 900, 950, 18 * MIB, 1.1, 0.6),
        run(P, 16, 0, 1, 1600, 1700, 8 * MIB),
        run(P, 16, 0, 2, 1800, 1900, 8 * MIB),
        run(P, 16, 0, 3, 2000, 2100, 8 * MIB),
        # cell 16/256: voyager has one failure, two ok reps (even count)
        run(V, 16, 256, 1, 3000, 3500, 272 * MIB, 2.0, 1.0),
        run(V, 16, 256, 2, None, 4000, 100 * MIB, ok=False, error={"phase": "transfer", "message": "link dropped"}),
        run(V, 16, 256, 3, 3001, 3600, 274 * MIB, 2.5, 1.5),
        run(M, 16, 256, 1, 6000, 6100, 273 * MIB),
        run(M, 16, 256, 2, 6002, 6101, 273 * MIB, intact=False),
        run(M, 16, 256, 3, 6004, 6102, 273 * MIB),
    ]
    return {
        "schema": 1, "profile": "test", "started": "S", "finished": "F",
        "host": {"kernel": "k", "cpus": 2, "mem_mib": 1000, "criu": "c", "runc": "r", "voyager": "v"},
        "grid": {"mem_mib": [16], "disk_mib": [0, 256], "files": [1000], "links": ["1gbit"],
                 "reps": 3, "methods": [V, M, P]},
        "baseline": "manual-runc",
        "podman": {"ran": True, "why_not": None},
        "links": [{"link": "1gbit", "iperf3_bps": 900e6, "error": None},
                  {"link": "1gbit", "iperf3_bps": 940e6, "error": None},
                  {"link": "1gbit", "iperf3_bps": 950e6, "error": None}],
        "skipped": [{"mem_mib": 4096, "disk_mib": 4096, "files": 1000, "link": "1gbit",
                     "reason": "disk: needs about 99999 MiB"}],
        "notes": [], "definitions": {}, "runs": runs,
    }


def rows(lines):
    """Markdown table body rows as lists of cells."""
    return [[c.strip() for c in l.strip().strip("|").split("|")] for l in lines[2:]]


class TestStats(unittest.TestCase):
    def test_median_odd_even_and_none(self):
        self.assertEqual(report.stats([3, 1, 2])["median"], 2)
        self.assertEqual(report.stats([4, 1])["median"], 2.5)
        self.assertEqual(report.stats([None, 5, 1, 3]), {"median": 3, "min": 1, "max": 5, "n": 3})
        self.assertIsNone(report.stats([None]))

    def test_fmt(self):
        self.assertEqual(report.fmt(450, "ms"), "450")
        self.assertEqual(report.fmt(3000.5, "ms"), "3000.5")
        self.assertEqual(report.fmt(0.5, "ratio"), "0.50")
        self.assertEqual(report.fmt(None, "ms"), "—")


class TestTables(unittest.TestCase):
    def setUp(self):
        self.doc = doc()
        self.summ = report.summarize(self.doc)

    def test_headline(self):
        t = report.headline_table(self.doc, self.summ)
        self.assertEqual(t[0], "| link | mem MiB | disk MiB | files | method | ok/runs | downtime median ms "
                               "| min | max | total median ms | min | max | downtime ÷ manual-runc "
                               "| downtime ÷ podman | memory intact |")
        r = rows(t)
        self.assertEqual(len(r), 5)  # podman has no 16/256 runs: no row
        self.assertEqual(r[0], ["1gbit", "16", "0", "1000", "voyager/stop-copy", "3/3",
                                "450", "400", "500", "950", "900", "1000", "0.50", "0.25", "3/3"])
        self.assertEqual(r[1], ["1gbit", "16", "0", "1000", "manual-runc", "3/3",
                                "900", "800", "1000", "950", "850", "1050", "1.00", "0.50", "3/3"])
        self.assertEqual(r[2], ["1gbit", "16", "0", "1000", "podman", "3/3",
                                "1800", "1600", "2000", "1900", "1700", "2100", "2.00", "1.00", "3/3"])
        # failed rep left out of the statistics, counted in ok/runs; even count
        self.assertEqual(r[3], ["1gbit", "16", "256", "1000", "voyager/stop-copy", "2/3",
                                "3000.5", "3000", "3001", "3550", "3500", "3600", "0.50", "—", "2/2"])
        self.assertEqual(r[4], ["1gbit", "16", "256", "1000", "manual-runc", "3/3",
                                "6002", "6000", "6004", "6101", "6100", "6102", "1.00", "—", "2/3"])

    def test_resources(self):
        r = rows(report.resource_table(self.doc, self.summ))
        self.assertEqual(r[0], ["1gbit", "16", "0", "1000", "voyager/stop-copy", "3/3",
                                "21.0", "20.0", "22.0", "1.312",
                                "0.60", "0.50", "0.70", "0.30", "0.25", "0.35",
                                "11.0", "20.0", "not measured"])
        self.assertEqual(r[1][16:18], ["—", "—"])  # idle voyagerd's peak: not shown
        self.assertEqual(r[2][6:10], ["8.0", "8.0", "8.0", "0.500"])
        self.assertEqual(r[2][10:18], ["—"] * 6 + ["—", "—"])
        self.assertEqual(r[3][6:10], ["273.0", "272.0", "274.0", "1.004"])

    def test_phases(self):
        d = self.doc
        d["runs"][0]["phases_ms"] = {"checkpoint": 100, "transfer": 200}
        d["runs"][1]["phases_ms"] = {"checkpoint": 300, "transfer": 400, "restore": 50}
        r = rows(report.phase_table(d))
        self.assertEqual(r, [["1gbit", "16", "0", "1000", "voyager/stop-copy", "2",
                              "checkpoint 200, transfer 300, restore 50"]])

    def test_links(self):
        r = rows(report.link_table(self.doc))
        self.assertEqual(r, [["1gbit", "3/3", "940", "900", "950", ""]])

    def test_ratio(self):
        c = ("1gbit", 1000, 16, 0)
        self.assertAlmostEqual(report.ratio(self.summ, c, "voyager/stop-copy", "manual-runc"), 0.5)
        self.assertAlmostEqual(report.ratio(self.summ, c, "voyager/stop-copy", "manual-runc", "total_ms"), 1.0)
        self.assertIsNone(report.ratio(self.summ, ("1gbit", 1000, 16, 256), "voyager/stop-copy", "podman"))

    def test_render_sections(self):
        md = report.render(self.doc)
        self.assertIn("15 runs, 1 failed, 1 migrated with memory NOT intact", md)
        self.assertIn("- voyager/stop-copy, link 1gbit, mem 16, disk 256, files 1000, rep 2: "
                      "result rolled-back: transfer: link dropped", md)
        self.assertIn("- manual-runc, link 1gbit, mem 16, disk 256, files 1000, rep 2: "
                      "migrated but memory check FAILED", md)
        self.assertIn("- mem 4096 MiB, disk 4096 MiB, files 1000, link 1gbit: disk: needs about 99999 MiB", md)
        self.assertNotIn("Podman baseline not run", md)

    def test_podman_absent(self):
        d = self.doc
        d["runs"] = [r for r in d["runs"] if r["method"] != "podman"]
        d["grid"]["methods"] = d["grid"]["methods"][:2]
        d["podman"] = {"ran": False, "why_not": "podman: Error: boom"}
        md = report.render(d)
        self.assertIn("**Podman baseline not run:** podman: Error: boom", md)
        self.assertNotIn("downtime ÷ podman", md)


class TestPlots(unittest.TestCase):
    def test_specs_only_measured(self):
        d = doc()
        specs = report.plot_specs(d, report.summarize(d))
        # one memory size: no downtime-vs-memory plot; disk has 0 and 256
        self.assertEqual([s["name"] for s in specs], ["downtime_vs_disk_1gbit_f1000"])
        by = {s["method"]: s["points"] for s in specs[0]["series"]}
        self.assertEqual(by["voyager/stop-copy"], [(0, 0.45, 0.4, 0.5), (256, 3.0005, 3.0, 3.001)])
        self.assertEqual(by["podman"], [(0, 1.8, 1.6, 2.0)])

    def test_star_grid(self):
        d = doc()
        # a star grid: memory 16 and 256 at disk 0, disk 0 and 256 at memory 16
        d["grid"].update({"mem_mib": [16, 256], "design": "star",
                          "cells": [[16, 0, 1000], [16, 256, 1000], [256, 0, 1000]]})
        d["runs"] += [run("voyager/stop-copy", 256, 0, r, 900 + r, 1500, 300 * MIB) for r in (1, 2, 3)]
        specs = {s["name"]: s for s in report.plot_specs(d, report.summarize(d))}
        self.assertEqual(sorted(specs), ["downtime_vs_disk_1gbit_f1000", "downtime_vs_mem_1gbit_f1000"])
        # downtime vs disk: only the series at memory 16 (256 has no disk > 0)
        self.assertEqual({s["other"] for s in specs["downtime_vs_disk_1gbit_f1000"]["series"]}, {16})
        mem = {s["method"]: s["points"] for s in specs["downtime_vs_mem_1gbit_f1000"]["series"]}
        self.assertEqual({s["other"] for s in specs["downtime_vs_mem_1gbit_f1000"]["series"]}, {0})
        self.assertEqual(mem["voyager/stop-copy"], [(16, 0.45, 0.4, 0.5), (256, 0.902, 0.901, 0.903)])
        md = report.render(d)
        self.assertIn("Grid (star: one axis at a time): memory [16, 256] MiB, disk [0, 256] MiB, files [1000]; "
                      "cells (memory, disk, files) (16, 0, 1000), (16, 256, 1000), (256, 0, 1000)", md)

    def test_files_written(self):
        d = doc()
        with tempfile.TemporaryDirectory(prefix="vybtest") as t:
            made = report.write_plots(d, t, run_gnuplot=False)
            self.assertEqual(len(made), 1)
            with open(made[0]["dat"]) as f:
                text = f.read()
            self.assertIn("0 0.450 0.400 0.500\n256 3.001 3.000 3.001\n", text)
            with open(made[0]["gp"]) as f:
                self.assertIn("with yerrorlines", f.read())

    def test_main_writes_report(self):
        with tempfile.TemporaryDirectory(prefix="vybtest") as t:
            p = os.path.join(t, "results.json")
            with open(p, "w") as f:
                json.dump(doc(), f)
            self.assertEqual(report.main([p, "--no-plots"]), 0)
            with open(os.path.join(t, "report.md")) as f:
                self.assertIn("## Downtime and total time", f.read())


J = "voyager/jit"


def jit_run(mem, disk, rep, downtime, total, indep, resume, phase, hyd_bytes, hyd_ms, samples,
            fs_kib, hwm=(30720, 30720)):
    """A jit run as bench/run.sh records it; indep None: never independent."""
    r = run(J, mem, disk, rep, downtime, total, 17 * MIB, hwm=hwm)
    r["independent"] = indep is not None
    r["independence_ms"] = indep
    r["jit"] = {"cli_return_ms": total + 50, "resume_ms": resume, "independent_phase_ms": phase,
                "target_result": "migrated" if indep is not None else None,
                "released": indep is not None,
                "served_bytes": hyd_bytes + MIB if indep is not None else None,
                "hydration": {"bytes": hyd_bytes, "files": 1000, "ms": hyd_ms} if indep is not None else None,
                "wait_limit_s": 90,
                "samples": [{"t_ms": t, "bytes": b, "bytes_total": hyd_bytes or 300 * MIB, "files": 0,
                             "files_total": 1000, "rate_bps": 0, "source_up": True} for t, b in samples]}
    r["voyager_fs_hwm_kib"] = {"n": 1, "sum": fs_kib, "max": fs_kib}
    return r


def doc_jit():
    """doc() plus jit runs in both cells (one never independent)."""
    d = doc()
    d["grid"]["methods"] = ["voyager/stop-copy", J, "manual-runc", "podman"]
    d["runs"] += [
        # 16/0: independence 1000, 1200, 1100; resume -> independent 500, 600, 550
        jit_run(16, 0, 1, 300, 600, 1000, 500, 900, 2 * MIB, 400, [(700, 1 * MIB)], 10240),
        jit_run(16, 0, 2, 320, 620, 1200, 600, 1000, 2 * MIB, 500, [(800, 1 * MIB)], 12288),
        jit_run(16, 0, 3, 310, 610, 1100, 550, 950, 2 * MIB, 450, [], 11264, hwm=(28672, 30720)),
        # 16/256: rep 2 migrated but never became independent
        jit_run(16, 256, 1, 330, 650, 5000, 500, 4500, 258 * MIB, 4000,
                [(1000, 8 * MIB), (2000, 90 * MIB), (3000, 170 * MIB), (4000, 250 * MIB)], 20480),
        jit_run(16, 256, 2, 340, 660, None, 500, None, None, None, [(1000, 5 * MIB)], 16384),
        jit_run(16, 256, 3, 350, 670, 6000, 600, 5400, 258 * MIB, 4800,
                [(1100, 10 * MIB), (5000, 250 * MIB)], 22528),
    ]
    return d


class TestJit(unittest.TestCase):
    def setUp(self):
        self.doc = doc_jit()
        self.summ = report.summarize(self.doc)

    def test_independence(self):
        t = report.independence_table(self.doc, self.summ)
        self.assertEqual(t[0], "| link | mem MiB | disk MiB | files | method | ok/runs | independent/ok "
                               "| to independence median ms | min | max | ÷ manual-runc | ÷ podman "
                               "| resume → independent median ms | min | max | measured as |")
        r = rows(t)
        self.assertEqual([x[4] for x in r], ["voyager/stop-copy", J, "manual-runc", "podman",
                                              "voyager/stop-copy", J, "manual-runc"])
        # stop-and-copy methods: their total time (950 ÷ 950, ÷ 1900)
        self.assertEqual(r[0], ["1gbit", "16", "0", "1000", "voyager/stop-copy", "3/3", "3/3",
                                "950", "900", "1000", "1.00", "0.50", "—", "—", "—", "total"])
        # jit: 1100 ÷ 950 and ÷ 1900; resume -> independent 500, 600, 550
        self.assertEqual(r[1], ["1gbit", "16", "0", "1000", J, "3/3", "3/3",
                                "1100", "1000", "1200", "1.16", "0.58", "550", "500", "600",
                                "journal migrated"])
        # the rep that never became independent is out of the statistics:
        # median of 5000 and 6000 over manual's 6101
        self.assertEqual(r[5], ["1gbit", "16", "256", "1000", J, "3/3", "2/3",
                                "5500", "5000", "6000", "0.90", "—", "4950", "4500", "5400",
                                "journal migrated"])
        self.assertEqual(r[6][6:10], ["3/3", "6101", "6100", "6102"])

    def test_hydration(self):
        r = rows(report.hydration_table(self.doc, self.summ))
        self.assertEqual(len(r), 2)  # jit only
        # rates (bytes after the first sample ÷ time to the independent
        # phase): 1 MiB in 200 ms = 41.9 Mbit/s, 1 MiB in 200 ms, none for
        # rep 3 (no sample); median 41.9 over iperf3's 940 Mbit/s
        self.assertEqual(r[0], ["1gbit", "16", "0", "1000", J, "3/3", "2.0", "450", "400", "500",
                                "42", "42", "42", "0.04", "1"])
        # 250 MiB in 3.5 s = 599.2 Mbit/s, 248 MiB in 4.3 s = 483.8 Mbit/s;
        # median 541.5
        self.assertEqual(r[1], ["1gbit", "16", "256", "1000", J, "2/3", "258.0", "4400", "4000", "4800",
                                "541", "484", "599", "0.58", "2"])

    def test_wire_with_hydration(self):
        r = rows(report.resource_table(self.doc, self.summ))
        j = [x for x in r if x[4] == J]
        # report's 17 MiB + served (hydrated + 1 MiB): 20 MiB over 16 MiB of data
        self.assertEqual(j[0][6:10], ["20.0", "20.0", "20.0", "1.250"])
        # 17 + 258 + 1 MiB over 272; the rep never released has no total and is left out
        self.assertEqual(j[1][6:10], ["276.0", "276.0", "276.0", "1.015"])
        self.assertIn("plus the file bytes the source served", report.render(self.doc))

    def test_sampled_rate(self):
        r = self.doc["runs"][-3]
        self.assertAlmostEqual(report.sampled_rate(r), 250 * MIB * 8 / 3.5)
        self.assertIsNone(report.sampled_rate(self.doc["runs"][-4]))  # no sample
        self.assertIsNone(report.sampled_rate(self.doc["runs"][-2]))  # never independent

    def test_memory(self):
        r = rows(report.memory_table(self.doc, self.summ))
        self.assertEqual([x[4] for x in r], ["voyager/stop-copy", J] * 2)  # voyager only
        # stop-copy's b: 20, 20, 22 MiB; jit's b: 30 MiB each: 1.50
        self.assertEqual(r[0], ["1gbit", "16", "0", "1000", "voyager/stop-copy", "3/3",
                                "11.0", "10.0", "12.0", "20.0", "20.0", "22.0", "—", "—", "—", "—", "1.00"])
        self.assertEqual(r[1], ["1gbit", "16", "0", "1000", J, "3/3",
                                "30.0", "28.0", "30.0", "30.0", "30.0", "30.0", "11.0", "10.0", "12.0", "1",
                                "1.50"])
        # 16/256: every ok run counts, the one never independent too
        self.assertEqual(r[3][12:16], ["20.0", "16.0", "22.0", "1"])
        self.assertEqual(r[2][12:], ["—"] * 5)  # stop-copy's b has no peak recorded

    def test_render(self):
        md = report.render(self.doc)
        for h in ("## Time to independence", "## Hydration (jit)", "## Peak memory"):
            self.assertIn(h, md)
        self.assertIn("- voyager/jit, link 1gbit, mem 16, disk 256, files 1000, rep 2: migrated but not "
                      "independent within 90 s (target journal result: None)", md)
        self.assertNotIn("## Hydration (jit)", report.render(doc()))

    def test_hydration_plot(self):
        specs = report.hydration_specs(self.doc)
        self.assertEqual([s["name"] for s in specs], ["hydration_1gbit_f1000"])
        ss = specs[0]["series"]
        self.assertEqual([(s["mem"], s["disk"], s["rep"], s["of"]) for s in ss], [(16, 0, 3, 3), (16, 256, 1, 2)])
        # rep 3 of 16/0 has no sample: only the journal's end point
        self.assertEqual(ss[0]["points"], [(0.4, 2.0)])
        # seconds since resume (500 ms), MiB; then the independent phase
        self.assertEqual(ss[1]["points"], [(0.5, 8.0), (1.5, 90.0), (2.5, 170.0), (3.5, 250.0), (4.0, 258.0)])
        self.assertEqual(ss[1]["total_mib"], 258.0)

    def test_plot_files(self):
        with tempfile.TemporaryDirectory(prefix="vybtest") as t:
            made = {m["name"]: m for m in report.write_plots(self.doc, t, run_gnuplot=False)}
            self.assertEqual(sorted(made), ["downtime_vs_disk_1gbit_f1000", "hydration_1gbit_f1000"])
            with open(made["hydration_1gbit_f1000"]["dat"]) as f:
                text = f.read()
            self.assertIn("0.500 8.000\n1.500 90.000\n2.500 170.000\n3.500 250.000\n4.000 258.000\n", text)
            with open(made["hydration_1gbit_f1000"]["gp"]) as f:
                self.assertIn("Hydration progress over time after resume", f.read())
            # jit is a series of the downtime-vs-disk plot: 310 ms, then
            # the median of 330, 340, 350
            with open(made["downtime_vs_disk_1gbit_f1000"]["gp"]) as f:
                self.assertIn("title 'voyager/jit, mem 16 MiB'", f.read())
        spec = report.plot_specs(self.doc, self.summ)[0]
        by = {s["method"]: s["points"] for s in spec["series"]}
        self.assertEqual(by[J], [(0, 0.31, 0.3, 0.32), (256, 0.34, 0.33, 0.35)])


if __name__ == "__main__":
    unittest.main()
