"""Runs the chart's rendered pod specs as local processes and checks that they form a working
city of a running federation.

A two-city `urbis devnet` runs the federation (its genesis has a third city; the devnet runs
that city's second validator but not its first, `--external-validators`). The chart is
rendered for that third city with its validator as that first validator. Each rendered
container is started as a process:
- its `args` and `env` as rendered;
- every volume it mounts (the chart's ConfigMap, the genesis ConfigMap, its Secret, its data
  volume) becomes a local directory holding exactly the files the cluster would mount;
- mount paths in the args and in the mounted configuration are mapped to those directories.
- the chart's Service names resolve to this machine (as cluster DNS resolves them).
The test then:
- checks each container's startup, liveness and readiness probes as rendered;
- submits a record addressed to another city through the chart's shard;
- waits until it is final and received and acknowledged across the chart's bridge;
- checks that the chart's validator decides the beacon's blocks with the others and signs
  their certificates.

Usage: run_pods.py URBIS_BINARY CHART_DIR"""
import json, os, random, re, shutil, signal, socket, subprocess, sys, tempfile, time, urllib.request

import helm_python as helm
import yaml

urbis, chart_dir = sys.argv[1], sys.argv[2]
work = tempfile.mkdtemp()
procs = []


def free_base():
    for _ in range(500):
        base = random.randrange(12000, 32000)
        held, ok = [], True
        try:
            for off in [0, 1, 10, 11] + list(range(200, 206)) + list(range(300, 303)):
                t = socket.socket(); t.bind(("127.0.0.1", base + off)); held.append(t)
            for off in list(range(100, 106)) + list(range(300, 303)):
                u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind(("127.0.0.1", base + off)); held.append(u)
        except OSError:
            ok = False
        for h in held:
            h.close()
        if ok:
            return base
    raise SystemExit("no free ports")


def get(url, timeout=10):
    return urllib.request.urlopen(url, timeout=timeout)


def wait(what, check, seconds=90):
    deadline = time.time() + seconds
    while True:
        try:
            value = check()
            if value:
                return value
        except Exception:
            pass
        if time.time() > deadline:
            for name, p, log in procs:
                print(f"== {name}\n" + open(log).read()[-3000:])
            raise SystemExit(f"timed out: {what}")
        time.sleep(0.2)


def run(*args):
    subprocess.run([urbis, *args], check=True, stdout=subprocess.DEVNULL)


try:
    base = free_base()
    fed = os.path.join(work, "federation")
    run("genesis", "create", "--name", "pods", "--cities", "athens,berlin,copenhagen",
        "--validators-per-city", "2", "--asset", "EUR:athens", "--out-dir", fed)
    devnet_log = os.path.join(work, "devnet.log")
    # The chart runs copenhagen's first validator; the devnet all the others (five of six
    # weigh more than two thirds, so the beacon runs before the chart's validator joins).
    genesis = json.load(open(os.path.join(fed, "genesis.json")))
    names = [v["name"] for v in genesis["validators"]["validators"]]
    own = names.index("copenhagen-validator-0")
    devnet = subprocess.Popen([urbis, "devnet", "--cities", "2", "--base-port", str(base), "--data-dir", fed,
                               "--external-validators", names[own]],
                              stdout=open(devnet_log, "w"), stderr=subprocess.STDOUT)
    procs.append(("devnet", devnet, devnet_log))
    manifest = wait("devnet.json", lambda: json.load(open(os.path.join(fed, "devnet.json"))))
    athens = manifest["cities"][0]
    beacon_apis = [v["beacon_api"] for v in manifest["validators"]]

    shard_port, quic_port, api_port = base + 10, base + 302, base + 11
    values = {
        "city": "copenhagen",
        "validator": {"name": names[own], "quicPort": base + 100 + own, "apiPort": base + 200 + own,
                      "peers": [{"address": f"127.0.0.1:{base + 100 + k}", "validator": n}
                                for k, n in enumerate(names) if k != own]},
        "shard": {"port": shard_port, "beaconApis": beacon_apis},
        "bridge": {"quicPort": quic_port, "apiPort": api_port,
                   "peers": {"athens": f"127.0.0.1:{base + 300}", "berlin": f"127.0.0.1:{base + 301}"}},
    }
    rendered = helm.Chart.load(chart_dir).render(values, name="copenhagen", namespace="urbis", is_install=True)
    docs = [d for path, text in rendered.items() if path.endswith(".yaml") for d in yaml.safe_load_all(text) if d]
    config_maps = {d["metadata"]["name"]: d["data"] for d in docs if d["kind"] == "ConfigMap"}
    services = [d["metadata"]["name"] for d in docs if d["kind"] == "Service"]

    # What the cluster would hold: the genesis ConfigMap and the city's Secrets.
    tokens = os.path.join(work, "tokens.json")
    token_file = os.path.join(work, "token")
    run("tokens", "issue", "--file", tokens, "--service", "open-data-office", "--kinds", "information",
        "--out", token_file)
    external_config_maps = {"urbis-genesis": {"genesis.json": open(os.path.join(fed, "genesis.json")).read()}}
    keys = os.path.join(fed, "keys")
    secrets = {
        "urbis-shard": {"sealing.json": os.path.join(keys, "copenhagen-sealing.json"), "tokens.json": tokens},
        "urbis-validator": {"validator.json": os.path.join(keys, f"{names[own]}.json"),
                            "tls.json": os.path.join(keys, f"{names[own]}-tls.json")},
        "urbis-bridge": {"tls.crt": os.path.join(keys, "copenhagen-bridge.pem"),
                         "tls.key": os.path.join(keys, "copenhagen-bridge-key.pem")},
    }

    def start(workload):
        spec = workload["spec"]["template"]["spec"]
        volumes = {v["name"]: v for v in spec["volumes"]}
        for claim in workload["spec"].get("volumeClaimTemplates", []):
            volumes[claim["metadata"]["name"]] = {"name": claim["metadata"]["name"], "persistentVolumeClaim": {}}
        (container,) = spec["containers"]
        name = f'{workload["kind"]}/{workload["metadata"]["name"]}'
        root = os.path.join(work, workload["metadata"]["name"])
        mounts = {}
        for m in container["volumeMounts"]:
            local = os.path.join(root, m["name"])
            os.makedirs(local, exist_ok=True)
            v = volumes[m["name"]]
            if "configMap" in v:
                data = config_maps.get(v["configMap"]["name"]) or external_config_maps[v["configMap"]["name"]]
                for file, text in data.items():
                    with open(os.path.join(local, file), "w") as f:
                        f.write(text)
            elif "secret" in v:
                for file, source in secrets[v["secret"]["secretName"]].items():
                    shutil.copy(source, os.path.join(local, file))
                    os.chmod(os.path.join(local, file), v["secret"].get("defaultMode", 0o644))
            mounts[m["mountPath"]] = local
        # Longest mount paths first, so /etc/urbis/secrets/shard wins over a shorter prefix.
        order = sorted(mounts, key=len, reverse=True)

        # One pass, longest mount path first, only where a path starts (so a local directory
        # written in is never mapped again).
        pattern = re.compile(r'(?<![\w/.-])(' + "|".join(re.escape(p) for p in order) + r')(?=/|"|$)')

        def local_path(text):
            text = pattern.sub(lambda m: mounts[m.group(1)], text)
            # Cluster DNS: the chart's Services resolve to this machine.
            for service in services:
                text = text.replace(f"//{service}:", "//127.0.0.1:")
            return text

        for path in order:
            if "config" in path:
                for file in os.listdir(mounts[path]):
                    full = os.path.join(mounts[path], file)
                    with open(full) as f:
                        text = local_path(f.read())
                    with open(full, "w") as f:
                        f.write(text)
        env = {"PATH": os.environ.get("PATH", "")}
        # As the kubelet does: the downward API's pod name, and $(VAR) naming an earlier variable.
        pod_name = workload["metadata"]["name"] + ("-0" if workload["kind"] == "StatefulSet" else "")
        for e in container.get("env", []):
            if "value" in e:
                value = e["value"]
            elif e.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath") == "metadata.name":
                value = pod_name
            else:
                raise AssertionError(f"{name}: env {e['name']} has a source this check does not run")
            value = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), value)
            env[e["name"]] = local_path(value)
        assert env.get("OTEL_SERVICE_NAME", "").startswith("urbis-"), env
        assert f"k8s.pod.name={pod_name}" in env.get("OTEL_RESOURCE_ATTRIBUTES", ""), env
        args = [local_path(a) for a in container.get("args", [])]
        log = os.path.join(work, workload["metadata"]["name"] + ".log")
        p = subprocess.Popen([urbis, *args], env=env, stdout=open(log, "w"), stderr=subprocess.STDOUT)
        procs.append((name, p, log))
        ports = {port["name"]: port["containerPort"] for port in container["ports"]}
        for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
            http = container[probe]["httpGet"]
            url = f'http://127.0.0.1:{ports[http["port"]]}{http["path"]}'
            wait(f"{name} {probe} {url}", lambda: get(url).status == 200)
        print(f"{name}: started from its rendered pod spec; startup, liveness and readiness probes pass")

    workloads = [d for d in docs if d["kind"] in ("StatefulSet", "Deployment")]
    assert sorted(w["metadata"]["name"] for w in workloads) == [
        "copenhagen-urbis-bridge", "copenhagen-urbis-shard", "copenhagen-urbis-validator"], workloads
    # The validator and the shard first (the bridge's readiness asks its shard).
    for w in sorted(workloads, key=lambda w: (w["kind"] != "StatefulSet", w["metadata"]["name"])):
        start(w)

    # The city works in the federation: a record from the chart's shard to athens is final,
    # received in athens through the chart's bridge, and acknowledged back.
    shard = f"http://127.0.0.1:{shard_port}"
    token = open(token_file).read().strip()
    body = json.dumps({"records": [{"kind": "information", "subject": "99" * 32, "to_city": "athens",
                                    "payload": {"dataset": "pods", "media_type": "application/json", "content": {"ok": True}}}]}).encode()
    req = urllib.request.Request(shard + "/v1/records", data=body, method="POST",
                                 headers={"Content-Type": "application/json", "Authorization": "Bearer " + token})
    receipt = json.load(urllib.request.urlopen(req, timeout=30))["records"][0]
    wait("final in copenhagen", lambda: json.load(get(f'{shard}/v1/records/{receipt["id"]}'))["level"] == "final")
    seq = receipt["sequence"]
    wait("received in athens", lambda: json.load(get(f'{athens["shard_api"]}/v1/packets/copenhagen/athens/{seq}'))["state"] == "received")
    wait("acknowledged in copenhagen", lambda: json.load(get(f"{shard}/v1/packets/copenhagen/athens/{seq}"))["state"] == "acknowledged")
    # The chart's validator decides blocks with the others, and its signature is in their
    # certificates (bit `own` of the signer bitmap, least significant bit first).
    validator = f"http://127.0.0.1:{base + 200 + own}"
    other = manifest["validators"][0]["beacon_api"]
    joined = wait("the chart's validator at the others' height", lambda: (
        lambda mine, theirs: mine if mine >= theirs - 2 else None)(
            json.load(get(f"{validator}/v1/beacon/blocks/latest"))["header"]["height"],
            json.load(get(f"{other}/v1/beacon/blocks/latest"))["header"]["height"]))

    def signed_by_chart_validator():
        latest = json.load(get(f"{other}/v1/beacon/blocks/latest"))
        signers = bytes.fromhex(latest["certificate"]["signers"])
        return latest["header"]["height"] > joined and signers[own // 8] >> (own % 8) & 1
    wait("a certificate signed by the chart's validator", signed_by_chart_validator)
    print("pods: the chart's validator, shard and bridge, run from their rendered pod specs, form a working city of the federation")
finally:
    for name, p, log in reversed(procs):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
    shutil.rmtree(work, ignore_errors=True)
