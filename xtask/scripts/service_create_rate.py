"""Create throughput and latency of the API server for ConfigMaps, ClusterIP
Services and headless Services (a diagnosis, not a benchmark target; see
BENCHMARKS.md, "Why the game Service apply is the slowest write").

Usage (against `cargo xtask cluster up`; creates namespaces rate-*):
  python3 xtask/scripts/service_create_rate.py KUBECONFIG N CONCURRENCY cm,svc,headless
Prints one line per kind. Needs a kubeconfig with a bearer token (the
xtask's clusters have one). Delete the namespaces or the cluster after.
"""
import json, ssl, sys, time, threading, http.client, re, statistics
kc = open(sys.argv[1]).read()
server = re.search(r"server: https://([^:]+):(\d+)", kc); host, port = server.group(1), int(server.group(2))
token = re.search(r"token: (\S+)", kc).group(1)
N, C = int(sys.argv[2]), int(sys.argv[3])
ctx = ssl._create_unverified_context()
def post(conn, path, obj):
    """POSTs obj as JSON on conn; returns the response (body read)."""
    conn.request("POST", path, json.dumps(obj), {"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    r = conn.getresponse(); r.read()
    return r
def body(kind, i):
    meta = {"name": f"x{i}", "labels": {"app": f"x{i}"}}
    if kind == "cm":
        return "/api/v1/namespaces/{ns}/configmaps", {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": {"a": "b"}}
    spec = {"selector": {"app": f"x{i}"}, "ports": [{"name": "mc", "port": 25565, "targetPort": 25565}]}
    if kind == "headless": spec["clusterIP"] = "None"
    return "/api/v1/namespaces/{ns}/services", {"apiVersion": "v1", "kind": "Service", "metadata": meta, "spec": spec}
def run(kind, ns):
    failed = []; lat = []; lock = threading.Lock(); nxt = [0]
    def worker():
        c = http.client.HTTPSConnection(host, port, context=ctx)
        while True:
            with lock:
                i = nxt[0]; nxt[0] += 1
            if i >= N: return
            path, b = body(kind, i)
            t = time.monotonic()
            r = post(c, path.format(ns=ns), b)
            if r.status != 201:
                failed.append(f"{kind}: HTTP {r.status} {r.reason} (namespace {ns} used before? start a new cluster)")
                return
            with lock: lat.append(time.monotonic() - t)
    t0 = time.monotonic()
    ts = [threading.Thread(target=worker) for _ in range(C)]
    [t.start() for t in ts]; [t.join() for t in ts]
    el = time.monotonic() - t0
    if failed: sys.exit(failed[0])
    print(f"{kind:9} N={N} concurrency={C}: {el:6.1f} s, {N/el:6.1f}/s, latency mean {statistics.mean(lat)*1000:7.1f} ms, p50 {statistics.median(lat)*1000:7.1f} ms, max {max(lat)*1000:7.1f} ms", flush=True)
for kind in sys.argv[4].split(","):
    ns = f"rate-{kind}-{C}-{N}"
    post(http.client.HTTPSConnection(host, port, context=ctx), "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
    run(kind, ns)
