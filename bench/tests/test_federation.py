"""bench/federation.py (report.md's federation section) on known jit.sh data."""
import os
import sys
import unittest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
import federation  # noqa: E402
import report  # noqa: E402
from test_report import doc, rows  # noqa: E402

MIB = 1 << 20


def fio(job, target, rep, mibs, error=None, state=None):
    r = {"job": job, "target": target, "rep": rep, "resident_before": 0,
         "bw_bytes": None if mibs is None else int(mibs * MIB)}
    if state:
        r["state"] = state
    if error:
        r["error"] = error
    return r


def scan(state, target, cache, rep, us, entries=620, files=500):
    return {"files": files, "state": state, "target": target, "cache": cache, "rep": rep, "us": us,
            "entries": entries}


def jit_doc():
    return {
        "benchmark": "jit",
        "params": {"rate": "1gbit", "disk_mib": 256, "meta_files": 500, "runs": 2, "fio_s": 3},
        "runs": [{"mode": "jit", "kind": "full", "rep": 1, "ok": True}],
        "fio": [
            # seqread: voyager-fs 900, 1000, 1100 (median 1000) over native 1000, 1200 (1100): 0.91
            fio("seqread", "native", 1, 1000), fio("seqread", "voyager-fs", 1, 900),
            fio("seqread", "voyager-fs", 1, 1000), fio("seqread", "native", 1, 1200),
            fio("seqread", "voyager-fs", 2, 1100), fio("seqread", "voyager-fs", 2, None, "fio: no output"),
            # seqread with the data local, hydration held: 500 over 400
            fio("seqread", "native", 1, 400, state="local"), fio("seqread", "voyager-fs", 1, 500, state="local"),
            # randread: 57 over median(50, 60) = 55: 1.04
            fio("randread", "native", 1, 50), fio("randread", "voyager-fs", 1, 57),
            fio("randread", "voyager-fs", 1, 57), fio("randread", "native", 1, 60),
            # randwrite: 120 over 1900: 0.06
            fio("randwrite", "native", 1, 2000), fio("randwrite", "voyager-fs", 1, 100),
            fio("randwrite", "voyager-fs", 1, 140), fio("randwrite", "native", 1, 1800),
        ],
        "scans": [
            # hydrating cold: 600 ms over 110 ms
            scan("hydrating", "native", "cold", 1, 100000), scan("hydrating", "voyager-fs", "cold", 1, 500000),
            scan("hydrating", "voyager-fs", "cold", 2, 700000), scan("hydrating", "native", "cold", 2, 120000),
            # hydrating warm: exactly the goal, 1.10
            scan("hydrating", "native", "warm", 1, 80000), scan("hydrating", "voyager-fs", "warm", 1, 88000),
            scan("hydrating", "voyager-fs", "warm", 2, 88000), scan("hydrating", "native", "warm", 2, 80000),
            # hydrated cold: the voyager-fs scan that saw fewer entries is left out
            scan("hydrated", "voyager-fs", "cold", 1, 300000), scan("hydrated", "native", "cold", 1, 100000),
            scan("hydrated", "voyager-fs", "cold", 2, 10000, entries=300),
            scan("hydrated", "native", "cold", 2, 100000),
            scan("hydrated", "voyager-fs", "warm", 1, 70000), scan("hydrated", "native", "warm", 1, 70000),
        ],
        "meta": {"500": {"status_before_scans": {"bytes_present": 50, "bytes_total": 1000}}},
    }


def fed(**kw):
    f = {"ran": True, "exit_status": 0, "error": None, "log": "federation/jit.log",
         "command": "bench/jit.sh --parts fio,meta", "jit": jit_doc()}
    f.update(kw)
    return f


class TestFederation(unittest.TestCase):
    def test_rows(self):
        r = federation.federation_rows(jit_doc())
        self.assertEqual(len(r), 8)
        self.assertEqual(r[0], ["fio sequential read 1 MiB, cold", "hydration held to 1 KB/s, data already local",
                                "MiB/s", "500.0 (500.0-500.0)", "400.0 (400.0-400.0)", "1/1", "1.25", "≥ 0.95",
                                "yes"])
        r = r[1:]
        # rows without a state are from before the local round: independent
        self.assertEqual(r[0], ["fio sequential read 1 MiB, cold", "after independence", "MiB/s",
                                "1000.0 (900.0-1100.0)", "1100.0 (1000.0-1200.0)", "3/2", "0.91", "≥ 0.95",
                                "**no**"])
        self.assertEqual(r[1][3:], ["57.0 (57.0-57.0)", "55.0 (50.0-60.0)", "2/2", "1.04", "≥ 0.95", "yes"])
        self.assertEqual(r[2][3:], ["120.0 (100.0-140.0)", "1900.0 (1800.0-2000.0)", "2/2", "0.06", "≥ 0.95",
                                    "**no**"])
        when = "before hydration: held to 256 KB/s, 5 % of the bytes local"
        self.assertEqual(r[3], ["find + stat, 500 files, cold", when, "ms", "600 (500-700)", "110 (100-120)",
                                "2/2", "5.45", "≤ 1.10", "**no**"])
        self.assertEqual(r[4], ["find + stat, 500 files, warm", when, "ms", "88 (88-88)", "80 (80-80)",
                                "2/2", "1.10", "≤ 1.10", "yes"])
        self.assertEqual(r[5], ["find + stat, 500 files, cold", "after independence", "ms", "300 (300-300)",
                                "100 (100-100)", "1/2", "3.00", "≤ 1.10", "**no**"])
        self.assertEqual(r[6][3:], ["70 (70-70)", "70 (70-70)", "1/1", "1.00", "≤ 1.10", "yes"])

    def test_paired_ratio(self):
        fio_l = jit_doc()["fio"]
        # rep 1: mean(900, 1000) / mean(1000, 1200); rep 2 has no native job
        self.assertEqual(federation.paired_ratio(fio_l, "seqread", "independent"),
                         {"median": 0.864, "min": 0.864, "max": 0.864, "n": 1})
        self.assertEqual(federation.paired_ratio(fio_l, "randread", "independent")["median"], 1.036)
        self.assertIsNone(federation.paired_ratio(fio_l, "seqread-warm", "independent"))

    def test_new_seqread_jobs_in_order(self):
        j = {"fio": [fio("randread", "native", 1, 50), fio("randread", "voyager-fs", 1, 50),
                     fio("seqread-direct", "native", 1, 1000), fio("seqread-direct", "voyager-fs", 1, 980),
                     fio("seqread-warm", "native", 1, 9000), fio("seqread-warm", "voyager-fs", 1, 8910),
                     fio("randwrite-direct", "voyager-fs", 1, 66), fio("randwrite-direct", "native", 1, 60)]}
        r = federation.federation_rows(j)
        self.assertEqual([x[0] for x in r], ["fio sequential read 1 MiB, warm", "fio sequential read 512 KiB, O_DIRECT",
                                             "fio random read 4 KiB, cold", "fio random write 4 KiB, O_DIRECT"])
        self.assertEqual(r[0][6:], ["0.99", "≥ 0.95", "yes"])
        self.assertEqual(r[1][6:], ["0.98", "≥ 0.95", "yes"])
        self.assertEqual(r[3][6:], ["1.10", "≥ 0.95", "yes"])

    def test_ratio_next_to_the_goal(self):
        j = {"fio": [fio("randread", "native", 1, 50), fio("randread", "voyager-fs", 1, 47.3)]}
        self.assertEqual(federation.federation_rows(j)[0][6:], ["0.946", "≥ 0.95", "**no**"])

    def test_section_in_report(self):
        d = doc()
        d["federation"] = fed(exit_status=1)
        md = report.render(d)
        self.assertIn("## Federation (voyager-fs vs native)", md)
        self.assertIn("## Downtime and total time", md)
        sec = md.split("## Federation (voyager-fs vs native)")[1].split("\n## ")[0]
        table = [l for l in sec.splitlines() if l.startswith("|")]
        self.assertEqual(table[0], "| measurement | when | unit | voyager-fs | native | n | ratio | goal | met |")
        self.assertEqual(rows(table)[4][6], "5.45")
        self.assertIn("the jobs run on that data already local while hydration of the rest is held", sec)
        self.assertIn("- bench/jit.sh exited with status 1", sec)
        self.assertIn("- fio seqread voyager-fs (independent) rep 2: fio: no output", sec)
        self.assertIn("- scan 500 files, hydrated, cold, voyager-fs rep 2 left out: 300 entries", sec)

    def test_absent_not_run_not_measured(self):
        self.assertNotIn("Federation", report.render(doc()))
        d = doc()
        d["federation"] = {"ran": False, "why_not": "left out (--no-federation)"}
        self.assertIn("Not run: left out (--no-federation)", report.render(d))
        d["federation"] = fed(jit=None, exit_status=124, timed_out=True,
                              error="bench/jit.sh wrote no results (federation/jit.json missing)")
        md = report.render(d)
        self.assertIn("**Not measured**: bench/jit.sh wrote no results.", md)
        self.assertNotIn("? MiB", md)
        self.assertIn("- bench/jit.sh exited with status 124 (timed out)", md)
        self.assertIn("## The link", md)

    def test_broken_record_does_not_hide_the_report(self):
        d = doc()
        d["federation"] = fed(jit={"fio": 5})
        md = report.render(d)
        self.assertIn("**Could not be reported**: TypeError", md)
        self.assertIn("## Downtime and total time", md)
        self.assertIn("## Cells refused by the sanity check", md)


if __name__ == "__main__":
    unittest.main()
