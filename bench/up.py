#!/usr/bin/env python3
"""`webui up`'s own overhead, and `webui status`'s wall time (issue 10, item 3).

Started by bench/run.sh (after the proxy table, or alone with `bench/run.sh --only up`),
or directly: `python3 bench/up.py` once target/release/webui is built.

Needs dockerd and the stand-in Open WebUI image that tests/infra/setup.sh pushes to the
local registry (127.0.0.1:5000/webui-test/open-webui:v1; its env file
/var/lib/webui-ci/env is read when WEBUI_TEST_OPENWEBUI_IMAGE is not set). Without
them it prints why and measures nothing (exit 0), so the proxy table still stands.

What it does, all on 127.0.0.1 with high ports, a private state dir and the local CA
(no --domain, so no ACME and no root ports):
  1. `webui up` once for real: creates the network, volume and container, creates the
     admin account; then the launcher is SIGKILLed, the container keeps running.
  2. REPS times: start `webui up` again with the same flags (it adopts the running,
     healthy container) and time, from just before the process is spawned,
       - the "listening on https://" line,
       - the first `GET /health` answered 200 by the upstream through the HTTPS proxy
         (a new TLS connection tried every ~2 ms from the moment the line appears),
       - the "Open WebUI is ready at" line (the admin gate open, summary printed);
     then SIGTERM (the container stays).
  3. With one `webui up` running: STATUS_REPS runs each of `webui status` and
     `webui status --json`, interleaved, wall time from spawn to exit.
Figures: median, min and max. Everything it starts is stopped and removed on exit
(the containers, network and volume with `webui down --purge-data --yes`).

Environment knobs:
  REPS=7          `webui up` restarts to time
  STATUS_REPS=20  runs of each status variant
  WEBUI_BIN=...   the webui binary (default target/release/webui)
  UP_IMAGE=...    the Open WebUI image (default $WEBUI_TEST_OPENWEBUI_IMAGE:v1)
  UP_RESULTS=path also write the figures as JSON here
"""

import atexit
import json
import os
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WEBUI = os.environ.get("WEBUI_BIN", os.path.join(ROOT, "target", "release", "webui"))
REPS = int(os.environ.get("REPS", "7"))
STATUS_REPS = int(os.environ.get("STATUS_REPS", "20"))
CI_ENV = "/var/lib/webui-ci/env"
PROJECT = f"t-bench-up-{os.getpid()}"
TARGET_UP_MS = 1000
TARGET_STATUS_MS = 100

work = tempfile.mkdtemp(prefix="webui-bench-up-")
state = os.path.join(work, "state")
launchers = []  # every `webui up` started here


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def env_file_var(name):
    """A variable from tests/infra/setup.sh's env file (export NAME=value lines)."""
    try:
        with open(CI_ENV) as f:
            for line in f:
                line = line.strip()
                if line.startswith(f"export {name}="):
                    return line.split("=", 1)[1].strip().strip("'\"")
    except OSError:
        pass
    return None


def webui_env():
    # Only what this script passes: no WEBUI_* from the caller's environment.
    return {k: v for k, v in os.environ.items() if not k.startswith("WEBUI_")}


def cmd(*args):
    return [WEBUI, "--state-dir", state, "--project", PROJECT, *args]


def cleanup():
    for p in launchers:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    for p in launchers:
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
    if os.path.isdir(state):
        r = subprocess.run(cmd("down", "--purge-data", "--yes"), env=webui_env(),
                           capture_output=True, text=True, timeout=120)
        if r.returncode != 0:
            log(f"  ! webui down exited {r.returncode}: {(r.stdout + r.stderr)[-800:]}")
    shutil.rmtree(work, ignore_errors=True)


atexit.register(cleanup)
for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(s, lambda signum, _f: sys.exit(128 + signum))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Launcher:
    """A `webui up` process whose output lines are kept with their arrival times."""

    def __init__(self, argv):
        self.lines = []  # (seconds since spawn, line)
        self.eof = False
        self.cond = threading.Condition()
        self.t0 = time.perf_counter()
        self.p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  stdin=subprocess.DEVNULL, env=webui_env(), cwd=work)
        launchers.append(self.p)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for raw in self.p.stdout:
            t = time.perf_counter() - self.t0
            with self.cond:
                self.lines.append((t, raw.decode(errors="replace").rstrip("\n")))
                self.cond.notify_all()
        with self.cond:
            self.eof = True
            self.cond.notify_all()

    def wait_line(self, needle, timeout):
        """Seconds from spawn to the first line containing `needle`."""
        deadline = time.perf_counter() + timeout
        with self.cond:
            while True:
                for t, line in self.lines:
                    if needle in line:
                        return t
                    if line.startswith("error:"):
                        raise SystemExit(f"webui up failed:\n{self.text()}")
                left = deadline - time.perf_counter()
                if left <= 0 or self.eof:
                    raise SystemExit(f"`{needle}` not printed within {timeout}s:\n{self.text()}")
                self.cond.wait(min(left, 0.5))

    def text(self):
        return "\n".join(line for _, line in self.lines)

    def stop(self, sig=signal.SIGTERM):
        self.p.send_signal(sig)
        self.p.wait(timeout=30)


def first_200(port, ctx, t0, timeout):
    """Seconds from t0 until GET /health through the proxy is answered 200."""
    req = b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    deadline = time.perf_counter() + timeout
    last = "no answer"
    while time.perf_counter() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as raw:
                with ctx.wrap_socket(raw, server_hostname="localhost") as s:
                    s.sendall(req)
                    head = s.recv(64)
                    t = time.perf_counter() - t0
                    if head.startswith(b"HTTP/1.1 200"):
                        return t
                    last = head.split(b"\r\n", 1)[0].decode(errors="replace")
        except (OSError, ssl.SSLError) as e:
            last = str(e)
        time.sleep(0.002)
    raise SystemExit(f"no 200 from https://127.0.0.1:{port}/health within {timeout}s; last: {last}")


def summary(xs):
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "n": len(xs)}


def main():
    sys.stdout.reconfigure(line_buffering=True)
    if not os.access(WEBUI, os.X_OK):
        raise SystemExit(f"{WEBUI} is missing: build it (cargo build --release --bin webui)")
    ow = os.environ.get("WEBUI_TEST_OPENWEBUI_IMAGE") or env_file_var("WEBUI_TEST_OPENWEBUI_IMAGE")
    base = os.environ.get("UP_IMAGE") or (f"{ow}:v1" if ow else None)
    if not shutil.which("docker"):
        print("\nwebui up overhead: skipped (no docker CLI: run tests/infra/setup.sh)")
        return
    if not base:
        print("\nwebui up overhead: skipped (no stand-in image: run tests/infra/setup.sh, "
              "or set UP_IMAGE)")
        return
    if subprocess.run(["docker", "image", "inspect", base], capture_output=True).returncode != 0:
        r = subprocess.run(["docker", "pull", "-q", base], capture_output=True, text=True)
        if r.returncode != 0:
            print(f"\nwebui up overhead: skipped ({base} not available: {r.stderr.strip()[-300:]}; "
                  "run tests/infra/setup.sh)")
            return
    os.makedirs(state)
    https, http, upstream = free_port(), free_port(), free_port()
    up = cmd("up", "--listen", f"127.0.0.1:{https}", "--http-listen", f"127.0.0.1:{http}",
             "--image", base, "--port", str(upstream), "--pull", "never")

    t_all = time.time()
    log(f"webui up overhead: project {PROJECT}, first up (creates the container)")
    first = Launcher(up)
    first_ready = first.wait_line("Open WebUI is ready at", 180)
    ctx = ssl.create_default_context(cafile=os.path.join(state, "ca", "ca.pem"))
    first.stop(signal.SIGKILL)  # a crashed launcher: the container keeps running

    res = {"listen": [], "first200": [], "ready": []}
    for i in range(REPS):
        time.sleep(0.5)
        la = Launcher(up)
        t_listen = la.wait_line("listening on https://", 30)
        t_200 = first_200(https, ctx, la.t0, 30)
        t_ready = la.wait_line("Open WebUI is ready at", 30)
        out = la.text()
        if "is up to date" not in out:
            raise SystemExit(f"the running container was not adopted as is:\n{out}")
        la.stop()
        log(f"  up {i + 1}/{REPS}: listening {t_listen * 1000:.0f} ms, first 200 "
            f"{t_200 * 1000:.0f} ms, ready line {t_ready * 1000:.0f} ms")
        res["listen"].append(t_listen * 1000)
        res["first200"].append(t_200 * 1000)
        res["ready"].append(t_ready * 1000)

    # `webui status` against the running stack (launcher up: its control socket answers).
    la = Launcher(up)
    la.wait_line("Open WebUI is ready at", 30)
    res["status"], res["status_json"] = [], []
    for i in range(STATUS_REPS):
        for key, extra in (("status", []), ("status_json", ["--json"])):
            t0 = time.perf_counter()
            r = subprocess.run(cmd("status", *extra), capture_output=True, text=True,
                               env=webui_env(), cwd=work, timeout=30)
            ms = (time.perf_counter() - t0) * 1000
            if r.returncode != 0:
                raise SystemExit(f"webui status {' '.join(extra)} exited {r.returncode}:\n"
                                 f"{r.stdout}{r.stderr}")
            if key == "status_json" and json.loads(r.stdout).get("supervisor") is None:
                raise SystemExit(f"status --json shows no running supervisor:\n{r.stdout}")
            res[key].append(ms)
    la.stop()

    figs = {k: summary(v) for k, v in res.items()}
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "src"],
                           capture_output=True, text=True).stdout.strip()
    load = os.getloadavg()[0]
    # The binary names the commit it was built from; the tree may have moved on since.
    version = subprocess.run([WEBUI, "--version"], capture_output=True, text=True).stdout.strip()
    print(f"\nwebui up overhead: {version}; tree at {commit}"
          f"{' plus uncommitted changes in src/' if dirty else ''};"
          f" {os.cpu_count()} CPUs, load average {load:.1f}; image present, container running and"
          f" healthy, local CA; {REPS} starts, {STATUS_REPS} status runs each;"
          f" total {time.time() - t_all:.0f}s (first up, creating the container:"
          f" {first_ready * 1000:.0f} ms)\n")
    rows = [
        ("listen", "webui up: start -> \"listening on https://\"", None),
        ("first200", "webui up: start -> first 200 from upstream via HTTPS", TARGET_UP_MS),
        ("ready", "webui up: start -> \"Open WebUI is ready at\"", None),
        ("status", "webui status (wall)", TARGET_STATUS_MS),
        ("status_json", "webui status --json (wall)", TARGET_STATUS_MS),
    ]
    w = max(len(r[1]) for r in rows)
    print(f"| {'measurement (ms, lower is better)':<{w}} | median |    min |    max | target          |")
    print(f"|{'-' * (w + 2)}|--------|--------|--------|-----------------|")
    for key, what, target in rows:
        f = figs[key]
        verdict = "" if target is None else (
            f"< {target}: {'met' if f['median'] < target else 'MISSED'}")
        print(f"| {what:<{w}} | {f['median']:6.0f} | {f['min']:6.0f} | {f['max']:6.0f} |"
              f" {verdict:<15} |")
    if os.environ.get("UP_RESULTS"):
        with open(os.environ["UP_RESULTS"], "w") as f:
            json.dump({"version": version, "commit": commit, "dirty": bool(dirty), "load": load,
                       "first_up_ms": first_ready * 1000, "figures": figs, "raw": res},
                      f, indent=1)


if __name__ == "__main__":
    main()
