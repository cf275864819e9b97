"""Renders the chart offline (helm-python-sdk), lints it strictly, validates every rendered
manifest with kubernetes-validate --strict, and runs yamllint on the chart's static YAML and
on the rendered manifests. Exits non-zero on any finding."""
import json, os, subprocess, sys, tempfile

import helm_python as helm

chart_dir = sys.argv[1]
out = tempfile.mkdtemp()
full = {
    "shard": {"beaconApis": ["http://athens-validator.urbis:8090"]},
    "validator": {"peers": [{"address": "10.0.0.2:9000", "validator": "berlin-validator-0"}]},
    "bridge": {"peers": {"berlin": "bridge.berlin.example:9100"}},
}
report = helm.lint(chart_dir, full, strict=True, kube_version="v1.33.0")
problems = [m for m in report.get("messages", []) if m.get("severity", 0) >= 2] + report.get("errors", [])
if problems:
    print("helm lint:", json.dumps(problems, indent=2))
    sys.exit(1)
print("helm lint (strict): clean")
chart = helm.Chart.load(chart_dir)
chart.validate_schema(full)
# A value the schema refuses must be refused.
try:
    chart.validate_schema({"shard": {"port": "eighty"}})
    print("values.schema.json accepted a port that is not a number")
    sys.exit(1)
except Exception:
    pass
files = []
for label, values in [("default", None), ("full", full)]:
    rendered = chart.render(values, name="athens", namespace="urbis", is_install=True)
    for path, text in rendered.items():
        if not path.endswith(".yaml") or not text.strip():
            continue
        target = os.path.join(out, label, path.replace("/", "_"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "w") as f:
            # As `helm template` prints it: the blank lines template control leaves at the top
            # of a file are not part of any document.
            f.write(text.lstrip("\n"))
        files.append(target)
print(f"rendered {len(files)} manifest files")
subprocess.run(["kubernetes-validate", "--strict", "--quiet", *files], check=True)
print("kubernetes-validate --strict: every rendered manifest is valid")
static = [os.path.join(chart_dir, p) for p in ("Chart.yaml", "values.yaml")]
config = os.path.join(os.path.dirname(os.path.abspath(__file__)), "yamllint.yaml")
subprocess.run(["yamllint", "-c", config, *static, *files], check=True)
print("yamllint: clean")
# The ServiceMonitor renders (a CRD: no schema to validate it against here).
rendered = chart.render({"serviceMonitor": {"enabled": True}}, name="athens", namespace="urbis")
assert any("kind: ServiceMonitor" in t for t in rendered.values()), "no ServiceMonitor rendered"
print("ServiceMonitor renders when enabled")
