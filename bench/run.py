#!/usr/bin/env python3
"""Side-by-side proxy benchmark: webui proxy vs nginx, Caddy, HAProxy, and direct.

Started by bench/run.sh (which installs the peers and builds the binaries). Everything
listens on 127.0.0.1; every process started here is in its own process group and is
stopped on exit (normal, error, Ctrl-C or SIGTERM).

Environment knobs:
  ROUNDS=2        rounds per measurement; within a round the proxies run one after
                  another (order rotated per round); the best of the rounds is kept
  DURATION=6      seconds per throughput measurement
  PROXIES=webui,nginx,caddy,haproxy   which proxies to run (direct is always run)
  ONLY=ka,h2,...  only these measurements (ka h2 hs hsr sse ws up down mem peak;
                  peak runs the loads chosen here, ka and h2 when none is)
  WEBUI_BIN=...   the webui binary (default target/release/webui)
  WEBUI_ARGS=...  extra arguments for `webui proxy`
  BASE_BIN=...    a second webui binary (e.g. before a change), run as column "base"
                  in the same run, interleaved like the others (not a peer)
  RESULTS=path    also write the results as JSON here
"""

import atexit
import json
import os
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "bench")
CLIENT = os.path.join(BENCH, "client", "target", "release", "webui-bench-client")
STANDIN = os.path.join(ROOT, "target", "release", "examples", "standin")
WEBUI = os.environ.get("WEBUI_BIN", os.path.join(ROOT, "target", "release", "webui"))

ROUNDS = int(os.environ.get("ROUNDS", "2"))
DUR = int(os.environ.get("DURATION", "6"))
ONLY = set(filter(None, os.environ.get("ONLY", "").split(",")))
PEERS_ALL = ["nginx", "caddy", "haproxy"]
WANT = os.environ.get("PROXIES", "webui," + ",".join(PEERS_ALL)).split(",")

UP_PORT = 18000
BASE = os.environ.get("BASE_BIN")
PORTS = {"webui": 18443, "nginx": 18444, "caddy": 18445, "haproxy": 18446, "base": 18447}
HTTP_PORTS = {"webui": 18080, "caddy": 18081, "base": 18082}
WS_IDLE = 2000

procs = []  # (name, Popen)
work = tempfile.mkdtemp(prefix="webui-bench-")


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def cleanup():
    for name, p in reversed(procs):
        if p.poll() is None:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
    deadline = time.time() + 5
    for name, p in procs:
        try:
            p.wait(timeout=max(0.1, deadline - time.time()))
        except subprocess.TimeoutExpired:
            try:
                os.killpg(p.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            p.wait()
    procs.clear()
    shutil.rmtree(work, ignore_errors=True)


atexit.register(cleanup)


def on_signal(signum, _frame):
    sys.exit(128 + signum)


signal.signal(signal.SIGTERM, on_signal)
signal.signal(signal.SIGINT, on_signal)
signal.signal(signal.SIGHUP, on_signal)


def start(name, argv, env=None, cwd=None):
    out = open(os.path.join(work, name + ".log"), "wb")
    p = subprocess.Popen(
        argv,
        stdout=out,
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        cwd=cwd or work,
        start_new_session=True,
    )
    procs.append((name, p))
    return p


def wait_port(port, what, timeout=15):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    log(open(os.path.join(work, what + ".log"), errors="replace").read()[-3000:])
    raise SystemExit(f"{what} did not listen on {port}")


def run(argv, timeout=120):
    r = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        log(f"  ! {' '.join(argv)} exited {r.returncode}: {r.stderr.strip()[-500:]}")
    return r.stdout


def kv(line):
    return {k: float(v) if re.fullmatch(r"-?[\d.]+|nan|inf", v) else v
            for k, v in re.findall(r"(\w+)=(\S+)", line)}


# ---------------------------------------------------------------- setup


def write(path, text):
    with open(path, "w") as f:
        f.write(text)


def cert():
    key, crt, pem = (os.path.join(work, n) for n in ("key.pem", "cert.pem", "both.pem"))
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-keyout", key, "-out", crt, "-days", "30", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"],
        check=True, capture_output=True)
    write(pem, open(crt).read() + open(key).read())
    return crt, key, pem


NGINX = """
worker_processes auto;
worker_rlimit_nofile 20000;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
user root;
events {{ worker_connections 10000; }}
http {{
  access_log off;
  client_body_temp_path {work}/nginx-body;
  proxy_temp_path {work}/nginx-proxy;
  fastcgi_temp_path {work}/nginx-fcgi;
  uwsgi_temp_path {work}/nginx-uwsgi;
  scgi_temp_path {work}/nginx-scgi;
  map $http_upgrade $connection_upgrade {{ default upgrade; '' ''; }}
  upstream openwebui {{ server 127.0.0.1:{up}; keepalive 64; }}
  server {{
    listen 127.0.0.1:{port} ssl http2;
    ssl_certificate {crt};
    ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:SSL:10m;
    ssl_session_timeout 1d;
    # Open WebUI's large uploads: no size limit here (webui has none by default).
    client_max_body_size 0;
    location / {{
      proxy_pass http://openwebui;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection $connection_upgrade;
      proxy_set_header Host $host;
      proxy_set_header X-Real-IP $remote_addr;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_buffering off;
      proxy_cache off;
      proxy_request_buffering off;
      proxy_connect_timeout 60s;
      proxy_send_timeout 3600s;
      proxy_read_timeout 3600s;
    }}
  }}
}}
"""

CADDY = """
{{
  admin off
  auto_https off
  http_port {http_port}
  https_port {port}
  servers {{
    protocols h1 h2
  }}
}}
https://127.0.0.1:{port}, https://localhost:{port} {{
  tls {crt} {key}
  reverse_proxy 127.0.0.1:{up} {{
    flush_interval -1
  }}
}}
"""

HAPROXY = """
global
  maxconn 9000
  nbthread 2
  ssl-default-bind-options ssl-min-ver TLSv1.2
defaults
  mode http
  option http-keep-alive
  timeout connect 5s
  timeout client 1h
  timeout server 1h
  timeout tunnel 1h
  timeout http-keep-alive 60s
frontend fe
  bind 127.0.0.1:{port} ssl crt {pem} alpn h2,http/1.1
  default_backend be
backend be
  http-reuse safe
  server s1 127.0.0.1:{up} maxconn 0
"""


def start_all(crt, key, pem):
    up = UP_PORT
    start("standin", [STANDIN], env={"HOST": "127.0.0.1", "PORT": str(up),
                                       "DATA_DIR": os.path.join(work, "data")})
    wait_port(up, "standin")
    pids = {}
    for name, binary in [("webui", WEBUI), ("base", BASE)]:
        if name not in WANT and not (name == "base" and binary):
            continue
        args = [binary, "proxy", "--upstream", f"http://127.0.0.1:{up}",
                "--listen", f"127.0.0.1:{PORTS[name]}",
                "--http-listen", f"127.0.0.1:{HTTP_PORTS[name]}",
                "--tls-cert", crt, "--tls-key", key, "-q"]
        args += os.environ.get("WEBUI_ARGS", "").split()
        pids[name] = start(name, args, env={"HOME": work}).pid
        wait_port(PORTS[name], name)
    if "nginx" in WANT:
        for d in ("nginx-body", "nginx-proxy", "nginx-fcgi", "nginx-uwsgi", "nginx-scgi"):
            os.makedirs(os.path.join(work, d), exist_ok=True)
        conf = os.path.join(work, "nginx.conf")
        write(conf, NGINX.format(work=work, up=up, port=PORTS["nginx"], crt=crt, key=key))
        pids["nginx"] = start("nginx", ["nginx", "-c", conf, "-p", work, "-g",
                                        "daemon off;"]).pid
        wait_port(PORTS["nginx"], "nginx")
    if "caddy" in WANT and shutil.which("caddy"):
        conf = os.path.join(work, "Caddyfile")
        write(conf, CADDY.format(up=up, port=PORTS["caddy"], http_port=HTTP_PORTS["caddy"],
                                 crt=crt, key=key))
        pids["caddy"] = start("caddy", ["caddy", "run", "--config", conf, "--adapter",
                                        "caddyfile"],
                              env={"HOME": work, "XDG_DATA_HOME": work,
                                   "XDG_CONFIG_HOME": work}).pid
        wait_port(PORTS["caddy"], "caddy")
    if "haproxy" in WANT:
        conf = os.path.join(work, "haproxy.cfg")
        write(conf, HAPROXY.format(up=up, port=PORTS["haproxy"], pem=pem))
        pids["haproxy"] = start("haproxy", ["haproxy", "-db", "-f", conf]).pid
        wait_port(PORTS["haproxy"], "haproxy")
    return pids


# ---------------------------------------------------------------- memory


def group_pids(pgid):
    out = []
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid:  # pgrp
                    out.append(int(d))
            except (OSError, IndexError, ValueError):
                pass
    return out


def pss_kb(pgid):
    """Proportional set size of every process of the proxy (nginx has several)."""
    total = 0
    for pid in group_pids(pgid):
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


class Sampler(threading.Thread):
    """Samples every proxy's PSS for the peak under load."""

    def __init__(self, pids):
        super().__init__(daemon=True)
        self.pids, self.peak, self.stop = pids, {n: 0 for n in pids}, False

    def run(self):
        while not self.stop:
            for n, pgid in self.pids.items():
                self.peak[n] = max(self.peak[n], pss_kb(pgid))
            time.sleep(0.2)


# ---------------------------------------------------------------- measurements


def unit_ms(v, u):
    return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[u]


def m_ka(url):
    out = run(["wrk", "-t2", "-c64", f"-d{DUR}s", "--latency", url + "/health"],
              timeout=DUR + 30)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    p50 = re.search(r"^\s+50%\s+([\d.]+)(us|ms|s)", out, re.M)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)", out, re.M)
    errs = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    if not rps:
        return {}
    return {"ka_rps": float(rps.group(1)), "ka_p50": unit_ms(*p50.groups()),
            "ka_p99": unit_ms(*p99.groups()), "ka_err": int(errs.group(1)) if errs else 0}


def m_h2(url):
    out = run(["h2load", "-t2", "-c64", "-m10", "-D", str(DUR), url + "/health"],
              timeout=DUR + 30)
    rps = re.search(r"finished in [\d.]+\w+, ([\d.]+) req/s", out)
    ok = re.search(r"(\d+) succeeded, (\d+) failed", out)
    if not rps or not ok or int(ok.group(1)) == 0:
        return {}
    return {"h2_rps": float(rps.group(1))}


def m_hs(url, resume=False):
    args = [CLIENT, "handshakes", url + "/health", str(max(3, DUR - 2)), "32"]
    out = kv(run(args + (["resume"] if resume else []), timeout=DUR + 30))
    key = "hsr_cps" if resume else "hs_cps"
    if "conns_per_s" not in out or out.get("conns", 0) == 0:
        return {}
    res = {key: out["conns_per_s"]}
    if resume:
        res["hsr_share"] = out["resumed"] / max(1, out["conns"])
    return res


def m_sse(url):
    # 32 streams, 20 ms apart: 1,600 events/s for 3 s, spread over the interval.
    out = kv(run([CLIENT, "sse", url, "32", "150", "20"], timeout=60))
    if not out.get("events"):
        return {}
    return {"sse_p50_abs": out["p50_ms"], "sse_p99_abs": out["p99_ms"]}


def m_ws(url):
    out = kv(run([CLIENT, "ws", url + "/ws", "32", str(max(3, DUR - 2)), "64"],
                 timeout=DUR + 30))
    if not out.get("msgs"):
        return {}
    return {"ws_mps": out["msgs_per_s"], "ws_p50": out["p50_us"] / 1000,
            "ws_p99": out["p99_us"] / 1000}


def m_down(url):
    out = kv(run([CLIENT, "download", url + "/download?bytes=1073741824"], timeout=120))
    return {"down_mbs": out["mb_per_s"]} if out.get("bytes", 0) >= 1 << 30 else {}


def m_up(url):
    out = kv(run([CLIENT, "upload", url + "/upload", str(512 << 20)], timeout=120))
    return {"up_mbs": out["mb_per_s"]} if out.get("ok") == "true" else {}


def m_mem(url, pgid):
    before = pss_kb(pgid)
    p = subprocess.Popen([CLIENT, "ws-idle", url + "/ws", str(WS_IDLE), "120"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                         start_new_session=True)
    procs.append(("ws-idle", p))
    line = p.stdout.readline()
    ready = kv(line).get("ready", 0)
    time.sleep(1.0)
    during = pss_kb(pgid)
    p.stdin.close()
    p.wait(timeout=30)
    procs.remove(("ws-idle", p))
    if ready < WS_IDLE:
        log(f"  ! only {ready} websockets opened: {line.strip()}")
        return {}
    time.sleep(0.5)
    return {"ws_kb_per_conn": (during - before) / ready, "rss_2k_ws_mb": during / 1024}


# ---------------------------------------------------------------- table

# key, label, higher-is-better, format
ROWS = [
    ("ka_rps", "HTTPS keep-alive req/s (wrk, 64 conns)", True, "{:,.0f}"),
    ("ka_p50", "  latency p50 ms", False, "{:.2f}"),
    ("ka_p99", "  latency p99 ms", False, "{:.2f}"),
    ("h2_rps", "HTTP/2 req/s (h2load, 64 conns x 10 streams)", True, "{:,.0f}"),
    ("hs_cps", "new TLS handshakes/s (full, 1 req each)", True, "{:,.0f}"),
    ("hsr_cps", "resumed TLS handshakes/s (1 req each)", True, "{:,.0f}"),
    ("sse_p50", "SSE added latency p50 ms (vs direct)", False, "{:.3f}"),
    ("sse_p99", "SSE added latency p99 ms (vs direct)", False, "{:.3f}"),
    ("ws_mps", "websocket echo msgs/s (32 conns, 64 B)", True, "{:,.0f}"),
    ("ws_p50", "  round trip p50 ms", False, "{:.3f}"),
    ("ws_p99", "  round trip p99 ms", False, "{:.3f}"),
    ("up_mbs", "upload MB/s (512 MiB, 1 conn)", True, "{:,.0f}"),
    ("down_mbs", "download MB/s (1 GiB, 1 conn)", True, "{:,.0f}"),
    ("rss_idle_mb", "RSS idle MB (PSS, all processes)", False, "{:.1f}"),
    ("rss_peak_mb", "RSS peak under load MB", False, "{:.1f}"),
    ("rss_2k_ws_mb", "RSS with 2,000 idle websockets MB", False, "{:.1f}"),
    ("ws_kb_per_conn", "  KB per idle websocket", False, "{:.1f}"),
]


def fmt(v, f):
    return "-" if v is None else f.format(v)


def ratio(a, b):
    """a / b, or None when either is missing or not positive (an SSE difference to
    direct can be 0 or negative: a ratio of those means nothing)."""
    return a / b if a is not None and b is not None and a > 0 and b > 0 else None


def table(res, names):
    peers = [n for n in names if n in PEERS_ALL]
    head = ["measurement"] + names + ["best peer", "webui/best", "webui/direct"]
    if "base" in names:
        head.append("webui/base")
    lines = []
    for key, label, higher, f in ROWS:
        vals = {n: res.get(n, {}).get(key) for n in names}
        if all(v is None for v in vals.values()):
            continue
        pv = {n: vals[n] for n in peers if vals[n] is not None}
        best = (max if higher else min)(pv, key=pv.get) if pv else None
        w, d = vals.get("webui"), vals.get("direct")
        r_best = ratio(w, pv[best]) if best else None
        r_dir = ratio(w, d)
        arrow = "↑" if higher else "↓"
        row = [f"{label} {arrow}"] + [fmt(vals[n], f) for n in names] + \
            [best or "-", fmt(r_best, "{:.2f}"), fmt(r_dir, "{:.2f}")]
        if "base" in names:
            b = vals.get("base")
            row.append(fmt(ratio(w, b), "{:.2f}"))
        lines.append(row)
    widths = [max(len(r[i]) for r in [head] + lines) for i in range(len(head))]
    out = ["| " + " | ".join(h.ljust(widths[i]) for i, h in enumerate(head)) + " |",
           "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    for r in lines:
        out.append("| " + " | ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i])
                                     for i, c in enumerate(r)) + " |")
    return "\n".join(out)


# ---------------------------------------------------------------- main


def main():
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    for b in (CLIENT, STANDIN, WEBUI):
        if not os.access(b, os.X_OK):
            raise SystemExit(f"missing {b}: run bench/run.sh (it builds it)")
    crt, key, pem = cert()
    pids = start_all(crt, key, pem)
    names = [n for n in ["webui", "base", "nginx", "caddy", "haproxy"] if n in pids] + ["direct"]
    if "caddy" in WANT and "caddy" not in pids:
        log("caddy is not installed: left out")
    https = {n: f"https://127.0.0.1:{PORTS[n]}" for n in pids}
    direct = f"http://127.0.0.1:{UP_PORT}"
    urls = {**https, "direct": direct}
    time.sleep(1.0)
    res = {n: {} for n in names}
    for n, pgid in pids.items():
        res[n]["rss_idle_mb"] = pss_kb(pgid) / 1024

    def want(k):
        return not ONLY or k in ONLY

    # Each measurement: all proxies one after another, order rotated each round, best
    # of the rounds kept (other load on a shared machine only ever makes figures worse).
    plan = [
        ("ka", "keep-alive HTTPS", lambda n: m_ka(urls[n]), names),
        ("h2", "HTTP/2", lambda n: m_h2(urls[n]), names),
        ("hs", "new TLS handshakes", lambda n: m_hs(urls[n]), list(pids)),
        ("hsr", "resumed TLS handshakes", lambda n: m_hs(urls[n], True), list(pids)),
        ("sse", "SSE", lambda n: m_sse(urls[n]), names),
        ("ws", "websocket echo", lambda n: m_ws(urls[n].replace("http", "ws", 1)), names),
        ("up", "upload", lambda n: m_up(urls[n]), names),
        ("down", "download", lambda n: m_down(urls[n]), names),
    ]
    better = {k: h for k, _, h, _ in ROWS}
    better.update({"sse_p50_abs": False, "sse_p99_abs": False, "hsr_share": True,
                   "ka_err": False})
    t0 = time.time()
    # Memory per websocket first, on fresh processes: after the load runs an allocator
    # that keeps freed memory would hide the cost of new connections in its free lists.
    if want("mem"):
        for n in pids:
            log(f"[{time.time() - t0:5.0f}s] {WS_IDLE} idle websockets: {n}")
            res[n].update(m_mem(urls[n].replace("http", "ws", 1), pids[n]))
            time.sleep(0.5)
    for key, what, fn, who in plan:
        if not want(key):
            continue
        for r in range(ROUNDS):
            order = who[r % len(who):] + who[:r % len(who)]
            for n in order:
                log(f"[{time.time() - t0:5.0f}s] {what}: {n} (round {r + 1}/{ROUNDS})")
                try:
                    got = fn(n)
                except Exception as e:  # noqa: BLE001 - one failed figure, not the run
                    log(f"  ! {e}")
                    got = {}
                log("  " + " ".join(f"{k}={v:.3f}" for k, v in got.items()))
                for k, v in got.items():
                    old = res[n].get(k)
                    if old is None or (v > old if better.get(k, True) else v < old):
                        res[n][k] = v
            time.sleep(0.5)
    # Peak memory under load, in a pass of its own: each proxy again through the
    # loads that hold the most memory, its PSS sampled meanwhile, the figures of these
    # runs not kept. Reading smaps_rollup walks the process's page tables under its
    # mmap lock, so sampling during the throughput runs above would slow the proxy
    # being measured (a multi-threaded one most).
    if want("peak"):
        loads = [k for k in ("ka", "h2", "ws", "up", "down") if want(k)] or ["ka", "h2"]
        run_of = {k: fn for k, _, fn, _ in plan}
        for n in pids:
            sampler = Sampler({n: pids[n]})
            sampler.start()
            for k in loads:
                log(f"[{time.time() - t0:5.0f}s] peak memory under load ({k}): {n}")
                try:
                    run_of[k](n)
                except Exception as e:  # noqa: BLE001 - one failed figure, not the run
                    log(f"  ! {e}")
            sampler.stop = True
            sampler.join()
            res[n]["rss_peak_mb"] = sampler.peak[n] / 1024
            time.sleep(0.5)
    if "direct" in res and "sse_p50_abs" in res["direct"]:
        for n in pids:
            if "sse_p50_abs" in res[n]:
                res[n]["sse_p50"] = res[n]["sse_p50_abs"] - res["direct"]["sse_p50_abs"]
                res[n]["sse_p99"] = res[n]["sse_p99_abs"] - res["direct"]["sse_p99_abs"]
        res["direct"]["sse_p50"] = res["direct"]["sse_p99"] = 0.0
    for n in pids:
        if res[n].get("ka_err"):
            log(f"  ! {n}: {res[n]['ka_err']:.0f} non-2xx responses in keep-alive run")
    commit = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True).stdout.strip()
    dirty = subprocess.run(["git", "-C", ROOT, "status", "--porcelain", "src"],
                           capture_output=True, text=True).stdout.strip()
    print(f"\nwebui {commit}{' plus uncommitted changes in src/' if dirty else ''}; "
          f"{os.cpu_count()} CPUs; {ROUNDS} rounds, best kept; {DUR}s per throughput run; "
          f"total {time.time() - t0:.0f}s\n")
    print(table(res, names))
    print("\n↑ higher is better, ↓ lower is better; best peer = best of nginx/caddy/haproxy;"
          "\nSSE added latency = that proxy's per-event delay percentile minus direct's.")
    if os.environ.get("RESULTS"):
        with open(os.environ["RESULTS"], "w") as f:
            json.dump({"commit": commit, "dirty": bool(dirty), "results": res}, f, indent=1)


if __name__ == "__main__":
    main()
