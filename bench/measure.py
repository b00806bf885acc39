"""Whole-process benchmark of devbox-auth against the loopback workspace emulation.

Each scenario runs `--runs` times; rounds alternate the scenarios (and the Python original
with ours), so drift on the machine hits all of them alike. Wall time is measured here around
the whole process; peak RSS is the process's own maximum resident set, as GNU time reports it
(`/usr/bin/time -f %M`, launched by this script: its own ~2 MiB is below every figure). Not
wait4 from Python directly: a child forked from this interpreter counts the interpreter's pages
until it execs. Prints a Markdown report: median and min–max per scenario, ratios to the Python
original, and the binary's size.

The second table is the network floor: the same cold start against emulators that answer over
TLS (HTTP/2 where the client asks for it) after 0, 30 and 100 ms per request — in-region and
cross-region workspaces — with the requests each run made, and the round trips on its critical
path, estimated as (median at 100 ms - median at 0 ms) / 100 ms.

Run through bench/run.sh, which builds everything and starts the emulator.
"""

import argparse
import json
import os
import ssl
import urllib.request
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

# What the Databricks Apps runtime sets in every app: the home then ends with the container,
# and devbox-auth fsyncs nothing (sandbox::Durability).
IN_AN_APP = {"DATABRICKS_APP_NAME": "devbox-bench"}
CLIENT_ID = "emulated-sp-client-id"
CLIENT_SECRET = "doseEMULATEDclientSECRETvalue0123"


TIME = "/usr/bin/time"
UNWRAPPED_TOKEN = "token-unwrapped"


def run_once(argv, env, cwd, wrapped=True):
    """(wall seconds, peak RSS KiB) of one run of argv; exits if it fails. Unwrapped (no GNU
    time, whose own exec adds about 0.6 ms here), the RSS is None. The wall time ends when the
    process exits, as `provision && app` sees it; its stderr goes to a file, not a pipe, so
    a background `revoke-due` it leaves holding stderr is not waited for."""
    with tempfile.NamedTemporaryFile("r") as rss_file, tempfile.TemporaryFile() as stderr:
        prefix = [TIME, "-f", "%M", "-o", rss_file.name] if wrapped else []
        started = time.perf_counter()
        proc = subprocess.run([*prefix, *argv], env=env, cwd=cwd,
                              stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr)
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            stderr.seek(0)
            sys.exit(f"{' '.join(argv)} failed ({proc.returncode}):\n{stderr.read().decode(errors='replace')}")
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
            "provision-cold": ("`provision`, cold: fresh home, empty cache (the Databricks App case: nothing fsynced)", cold(["provision"], **IN_AN_APP)),
            "provision-cold-synced": ("`provision`, cold, outside a Databricks App: the files and the state fsynced", cold(["provision"])),
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
        if a.compare:
            # The same scenarios with another build of the binary (e.g. another opt-level),
            # alternating with these in the same rounds.
            def other(argv_tail, **extra):
                def setup():
                    home = self.fresh("home")
                    return [a.compare, *argv_tail], self.env(home, self.fresh("cache"), **extra), home
                return setup
            out["compare-provision-cold"] = (f"the same, built as `{a.compare}`", other(["provision"], **IN_AN_APP))
            out["compare-custom-cold"] = ("custom policy (strict), cold, with that build", other(["provision", "--policy", a.custom], **models))
            out["compare-token"] = ("`token`, nothing due, with that build", lambda: ([a.compare, "token"], self.env(token_home, self.fresh("c")), token_home))
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


def settled_requests(url, latency_ms, context=None):
    """The emulator's request count once nothing more arrives for a while: a `revoke-due` run
    that `provision` left in the background is counted with its run, and does not overlap the
    next one."""
    def served():
        with urllib.request.urlopen(f"{url}/__emulator/requests", context=context) as answer:
            return int(answer.read())

    count = served()
    deadline = time.monotonic() + 30
    while True:
        if time.monotonic() > deadline:
            sys.exit(f"the emulator at {url} kept receiving requests for 30 s after a run")
        time.sleep((latency_ms + 100) / 1000)
        later = served()
        if later == count:
            return count
        count = later


class Emulator:
    """A devbox-emulator process over TLS with a per-request latency."""

    def __init__(self, binary, latency_ms):
        self.latency_ms = latency_ms
        self.proc = subprocess.Popen([binary, "--tls", "--latency-ms", str(latency_ms)],
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.url = self.proc.stdout.readline().strip().removeprefix("url=")
        self.ca = self.proc.stdout.readline().strip().removeprefix("ca=")
        self.context = ssl.create_default_context(cafile=self.ca)

    def settled_requests(self):
        return settled_requests(self.url, self.latency_ms, self.context)

    def stop(self):
        self.proc.terminate()
        self.proc.wait(timeout=10)


def network_floor(bench, args, latencies):
    """name -> latency -> ([wall seconds], [requests]) for the cold start, the cold start as
    `watch` runs it (clean-up deferred), a rotation by `token`, and the Python original."""
    emulators = {ms: Emulator(args.emulator_bin, ms) for ms in latencies}
    results = {}
    try:
        def env(emulator, home, **extra):
            return dict(bench.base_env, HOME=home, DEVBOX_AUTH_CACHE_DIR=bench.fresh("c"), DATABRICKS_HOST=emulator.url,
                        SSL_CERT_FILE=emulator.ca, REQUESTS_CA_BUNDLE=emulator.ca, **extra)

        def cold(emulator, argv_tail, binary=args.bin, **extra):
            home = bench.fresh("home")
            return [binary, *argv_tail], env(emulator, home, **extra), home

        def rotation(emulator):
            home = bench.fresh("home")
            run_once([args.bin, "provision"], env(emulator, home, **IN_AN_APP), home)
            # Its background `revoke-due` saves the state when done: edit it after that.
            emulator.settled_requests()
            state_file = os.path.join(home, ".local/state/devbox-auth/state.json")
            state = json.load(open(state_file))
            state["refresh_at_ms"] = 0
            json.dump(state, open(state_file, "w"))
            return [args.bin, "token"], env(emulator, home, **IN_AN_APP), home

        scenarios = {
            "cold": ("`provision`, cold, in a Databricks App (fresh home; the earlier start's token revoked after it exits, by the `revoke-due` run it leaves)",
                     lambda e: cold(e, ["provision"], **IN_AN_APP)),
            "cold-synced": ("the same outside a Databricks App: the files and the state fsynced",
                            lambda e: cold(e, ["provision"])),
            "cold-watch": ("cold start as `watch` runs it: configs on disk, the clean-up left to the next run",
                           lambda e: cold(e, ["provision", "--defer-revocations"], **IN_AN_APP)),
            "rotation": ("a rotation by `token` (the sign-in reused)", rotation),
        }
        if args.compare:
            scenarios["compare-cold"] = (f"the cold start in an app, built as `{args.compare}`",
                                         lambda e: cold(e, ["provision"], binary=args.compare, **IN_AN_APP))
        if args.python:
            scenarios["original"] = ("Python original (databricks-sdk), fresh home",
                                     lambda e: ([args.python, args.original], env(e, bench.fresh("py-home")),
                                                bench.work))
        for name in scenarios:
            results[name] = {ms: ([], []) for ms in latencies}
        names = list(scenarios)
        for round_ in range(args.runs):
            for ms in latencies:
                emulator = emulators[ms]
                for name in (names if round_ % 2 == 0 else list(reversed(names))):
                    argv, run_env, cwd = scenarios[name][1](emulator)
                    before = emulator.settled_requests()
                    wall, _ = run_once(argv, run_env, cwd, wrapped=False)
                    results[name][ms][0].append(wall)
                    results[name][ms][1].append(emulator.settled_requests() - before)
        return {name: (scenarios[name][0], results[name]) for name in scenarios}
    finally:
        for emulator in emulators.values():
            emulator.stop()


def print_floor(floor, latencies):
    print()
    print("Over TLS, per-request latency of " + ", ".join(f"{ms} ms" for ms in latencies) +
          " (wall: median (min–max)); requests per run; round trips on the critical path "
          f"= (median at {latencies[-1]} ms − median at {latencies[0]} ms) / {latencies[-1] - latencies[0]} ms:")
    print()
    print("| scenario | " + " | ".join(f"{ms} ms" for ms in latencies) + " | requests | round trips |")
    print("| --- | " + " | ".join("---" for _ in latencies) + " | --- | --- |")
    original = floor.get("original")
    for name, (label, by_latency) in floor.items():
        cells = []
        for ms in latencies:
            walls = by_latency[ms][0]
            cell = fmt_ms(walls)
            if original and name != "original":
                cell += f", {statistics.median(original[1][ms][0]) / statistics.median(walls):.1f}x faster"
            cells.append(cell)
        requests = statistics.median(by_latency[latencies[0]][1])
        first, last = latencies[0], latencies[-1]
        slope = "n/a" if first == last else f"{(statistics.median(by_latency[last][0]) - statistics.median(by_latency[first][0])) / ((last - first) / 1000):.1f}"
        print(f"| {label} | " + " | ".join(cells) + f" | {requests:.0f} | {slope} |")


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
    p.add_argument("--emulator-bin", required=True, help="the devbox-emulator binary (for the TLS emulators)")
    p.add_argument("--compare", help="another build of devbox-auth, measured in the same rounds")
    p.add_argument("--latencies", default="0,30,100", help="per-request latencies for the network-floor table, ms")
    args = p.parse_args()
    latencies = [int(ms) for ms in args.latencies.split(",")]

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
                if name != "original-cold":
                    settled_requests(args.emulator, 0)
        idle = bench.watch_idle(args.idle_seconds)
        floor = network_floor(bench, args, latencies)
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
    print_floor(floor, latencies)
    json.dump({name: {"wall_s": results[name][0], "rss_kib": results[name][1]} for name in results},
              open(os.environ.get("BENCH_JSON", os.devnull), "w"))


if __name__ == "__main__":
    main()
