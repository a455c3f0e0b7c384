#!/usr/bin/env python3
"""Writes N schema-3 audit decision records for timing `authz policy replay` (docs/benchmarks.md,
"Policy replay"): one header, then decisions by the demo principals on the demo models, one in
seven without an access reason. The lines have the fields replay reads; their hashes are not a
valid chain (replay does not check them; `authz audit verify` would refuse the file).

    python3 bench/gen_audit.py 1000000 /tmp/audit.jsonl
"""

import json
import sys

PRINCIPALS = [
    ("analyst-1", ["analyst", "mission-user"]),
    ("security-1", ["security-engineer", "mission-user"]),
    ("admin-1", ["platform-admin", "security-engineer"]),
    ("load-tester", ["load-tester"]),
    ("batch-client", ["analyst"]),
]
MODELS = ["mission-summarizer", "threat-triage", "benchmark-echo"]
ZERO = "0" * 64


def main(argv: list[str]) -> int:
    if len(argv) != 2 or not argv[0].isdigit():
        print(__doc__, file=sys.stderr)
        return 64
    count, out = int(argv[0]), argv[1]
    t0 = 1_796_000_000  # Unix seconds of the first record
    with open(out, "w") as f:
        f.write(json.dumps({"v": 3, "kind": "header", "seq": 0, "time": "2026-12-01T00:00:00Z",
                            "replica": "gen", "file_seq": 0, "writer": "bench/gen_audit.py",
                            "prev_hash": ZERO, "hash": ZERO}, separators=(",", ":")) + "\n")
        for n in range(count):
            pid, roles = PRINCIPALS[n % len(PRINCIPALS)]
            record = {
                "v": 3, "kind": "decision", "seq": n + 1, "replica": "gen",
                "principal": {"id": pid, "auth_method": "jwt", "roles": roles},
                "model": MODELS[n % len(MODELS)], "action": "infer",
                "decision": "allow", "status": 200, "reason": "allowed",
                "request_time": t0 + n // 1000, "prev_hash": ZERO, "hash": ZERO,
            }
            if n % 7:
                record["access_reason"] = "triage of the overnight field reports"
            f.write(json.dumps(record, separators=(",", ":")) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
