"""Whole-process benchmark of devbox-auth against the loopback workspace emulation.

Each scenario runs `--runs` times; rounds alternate the scenarios (and the Python original
with ours), so drift on the machine hits all of them alike. Wall time is measured here around
the whole process; peak RSS is the process's own maximum resident set, as GNU time reports it
(`/usr/bin/time -f %M`, launched by this script: its own ~2 MiB is below every figure). Not
wait4 from Python directly: a child forked from this interpreter counts the interpreter's pages
until it execs. Prints a Markdown report: median and min–max per scenario, ratios to the Python
original, and the binary's size.

Run through bench/run.sh, which builds everything and starts the emulator.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

CLIENT_ID = "emulated-sp-client-id"
CLIENT_SECRET = "doseEMULATEDclientSECRETvalue0123"


TIME = "/usr/bin/time"
UNWRAPPED_TOKEN = "token-unwrapped"


def run_once(argv, env, cwd, wrapped=True):
    """(wall seconds, peak RSS KiB) of one run of argv; exits if it fails. Unwrapped (no GNU
    time, whose own exec adds about 0.6 ms here), the RSS is None."""
    with tempfile.NamedTemporaryFile("r") as rss_file:
        prefix = [TIME, "-f", "%M", "-o", rss_file.name] if wrapped else []
        started = time.perf_counter()
        proc = subprocess.run([*prefix, *argv], env=env, cwd=cwd,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            sys.exit(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stderr.decode(errors='replace')}")
        return wall, int(rss_file.read().split()[-1]) if wrapped else None


class Bench:
    def __init__(self, args):
        self.args = args
        self.work = tempfile.mkdtemp(prefix="devbox-bench-")
        self.base_env = {
            "PATH": os.environ["PATH"],
            "DATABRICKS_HOST": args.emulator,
            "DATABRICKS_CLIENT_ID": CLIENT_ID,
            "DATABRICKS_CLIENT_SECRET": CLIENT_SECRET,
        }
        self.counter = 0

    def fresh(self, name):
        self.counter += 1
        path = os.path.join(self.work, f"{name}-{self.counter}")
        os.makedirs(path)
        return path

    def env(self, home, cache, **extra):
        env = dict(self.base_env, HOME=home, DEVBOX_AUTH_CACHE_DIR=cache)
        env.update(extra)
        return env

    def scenarios(self):
        """name -> (label, setup) where setup() gives (argv, env, cwd) for one run."""
        a = self.args
        bin_ = a.bin
        warm_home = self.fresh("warm-home")
        warm_cache = self.fresh("warm-cache")
        custom_home = self.fresh("custom-home")
        custom_cache = self.fresh("custom-cache")
        token_home = self.fresh("token-home")
        models = {"DEVBOX_MODELS": "databricks-claude-sonnet-4"}
        # Warm states: one run first, outside the measurements.
        run_once([bin_, "provision"], self.env(warm_home, warm_cache), warm_home)
        run_once([bin_, "provision", "--policy", a.custom], self.env(custom_home, custom_cache, **models), custom_home)
        run_once([bin_, "provision"], self.env(token_home, self.fresh("c")), token_home)

        def cold(argv_tail, **extra):
            def setup():
                home = self.fresh("home")
                return [bin_, *argv_tail], self.env(home, self.fresh("cache"), **extra), home
            return setup

        def warm(home, cache, argv_tail, **extra):
            return lambda: ([bin_, *argv_tail], self.env(home, cache, **extra), home)

        out = {
            "provision-cold": ("`provision`, cold: fresh home, empty cache (the Databricks App case)", cold(["provision"])),
            "provision-warm": ("`provision`, warm: the same home again", warm(warm_home, warm_cache, ["provision"])),
            "custom-cold": ("custom policy (strict), cold: compiled at start", cold(["provision", "--policy", a.custom], **models)),
            "custom-default-cold": ("custom policy the size of the default (the default's own .wasm), cold: compiled at start", cold(["provision", "--policy", a.default_wasm])),
            "custom-warm": ("custom policy (strict), warm: from the compile cache", warm(custom_home, custom_cache, ["provision", "--policy", a.custom], **models)),
            "custom-precompiled": ("custom policy (strict), cold, shipped precompiled (`policy compile` + manifest)", cold(["provision", "--manifest", a.manifest], **models)),
            "dry-run": ("`provision --dry-run`, fresh home", cold(["provision", "--dry-run"])),
            "policy-test": ("`policy test` on the default policy's cases", warm(warm_home, warm_cache, ["policy", "test", a.default_wasm, a.cases])),
            "token": ("`token`, nothing due (the apiKeyHelper path)", warm(token_home, self.fresh("c"), ["token"])),
            UNWRAPPED_TOKEN: ("`token`, nothing due, wall without GNU time around it (spawned from Python)", warm(token_home, self.fresh("c"), ["token"])),
        }
        if a.python:
            def original():
                home = self.fresh("py-home")
                return [a.python, a.original], dict(self.base_env, HOME=home), home
            out["original-cold"] = ("Python original (databricks-sdk), fresh home", original)
        return out

    def watch_idle(self, seconds):
        """RSS and CPU share of an idle `watch`, sampled from /proc after its first provision."""
        home = self.fresh("watch-home")
        proc = subprocess.Popen([self.args.bin, "watch"], env=self.env(home, self.fresh("c")), cwd=home,
                                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        state = os.path.join(home, ".local/state/devbox-auth/state.json")
        deadline = time.time() + 30
        while not os.path.exists(state):
            if time.time() > deadline or proc.poll() is not None:
                sys.exit("watch did not provision")
            time.sleep(0.05)
        time.sleep(0.5)
        ticks = os.sysconf("SC_CLK_TCK")

        def cpu():
            fields = open(f"/proc/{proc.pid}/stat").read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / ticks

        def rss():
            for line in open(f"/proc/{proc.pid}/status"):
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
            return 0

        cpu0, t0 = cpu(), time.time()
        samples = []
        while time.time() - t0 < seconds:
            samples.append(rss())
            time.sleep(0.1)
        share = (cpu() - cpu0) / (time.time() - t0) * 100
        proc.terminate()
        proc.wait(timeout=10)
        return statistics.median(samples), max(samples), share


def fmt_ms(values):
    med = statistics.median(values) * 1000
    return f"{med:.1f} ms ({min(values) * 1000:.1f}–{max(values) * 1000:.1f})"


def fmt_mib(values):
    med = statistics.median(values) / 1024
    return f"{med:.1f} MiB ({min(values) / 1024:.1f}–{max(values) / 1024:.1f})"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bin", required=True)
    p.add_argument("--emulator", required=True)
    p.add_argument("--custom", required=True, help="a custom policy component (.wasm)")
    p.add_argument("--manifest", required=True, help="a manifest pinning --custom and its precompiled artifact")
    p.add_argument("--default-wasm", required=True)
    p.add_argument("--cases", required=True)
    p.add_argument("--runs", type=int, default=21)
    p.add_argument("--python", help="a Python with databricks-sdk, to run the original")
    p.add_argument("--original", default=os.path.join(os.path.dirname(__file__), "original.py"))
    p.add_argument("--idle-seconds", type=float, default=10)
    args = p.parse_args()

    bench = Bench(args)
    try:
        scenarios = bench.scenarios()
        results = {name: ([], []) for name in scenarios}
        names = list(scenarios)
        for round_ in range(args.runs):
            order = names if round_ % 2 == 0 else list(reversed(names))
            for name in order:
                argv, env, cwd = scenarios[name][1]()
                wall, rss = run_once(argv, env, cwd, wrapped=name != UNWRAPPED_TOKEN)
                results[name][0].append(wall)
                results[name][1].append(rss)
        idle = bench.watch_idle(args.idle_seconds)
    finally:
        shutil.rmtree(bench.work, ignore_errors=True)

    size = os.path.getsize(args.bin)
    print(f"devbox-auth binary: {args.bin}, {size / 1048576:.1f} MiB; {args.runs} runs per scenario, alternating; "
          f"{os.cpu_count()} CPUs; {time.strftime('%Y-%m-%d')}")
    print()
    print("| scenario | wall: median (min–max) | peak RSS: median (min–max) | vs the Python original (wall, RSS) |")
    print("| --- | --- | --- | --- |")
    original = results.get("original-cold")
    for name, (label, _) in scenarios.items():
        walls, rsss = results[name]
        if None in rsss:
            print(f"| {label} | {fmt_ms(walls)} | (not measured) | |")
            continue
        ratio = ""
        if original and name != "original-cold":
            ratio = (f"{statistics.median(original[0]) / statistics.median(walls):.0f}x faster, "
                     f"{statistics.median(rsss) / statistics.median(original[1]):.2f} of its RSS")
        print(f"| {label} | {fmt_ms(walls)} | {fmt_mib(rsss)} | {ratio} |")
    med, peak, share = idle
    print(f"| `watch`, idle between rotations ({args.idle_seconds:.0f} s sampled) | CPU {share:.2f}% | "
          f"{med / 1024:.1f} MiB (max {peak / 1024:.1f}) | |")
    json.dump({name: {"wall_s": results[name][0], "rss_kib": results[name][1]} for name in results},
              open(os.environ.get("BENCH_JSON", os.devnull), "w"))


if __name__ == "__main__":
    main()
