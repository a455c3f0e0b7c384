#!/usr/bin/env python3
"""OIP gRPC through the gateway with the unmodified `tritonclient` (driven by gateway_grpc.rs).

Reads one JSON object on stdin:
  {"url": "127.0.0.1:PORT", "cases": [{"name": "...", "model": "...", "token": "..." | null,
                                       "reason": "..." | null, "call": "infer" | "server_live" | "metadata",
                                       "repeat": N (mission-summarizer: the words N times),
                                       "headers": {extra metadata}, "compression": "gzip" | null}]}
and prints one JSON object per case, one per line:
  {"name": ..., "ok": true, "outputs": {"OUTPUT": [...]}}       on success
  {"name": ..., "ok": false, "status": "StatusCode.PERMISSION_DENIED", "message": "..."}

The inputs of each demo model follow models/README.md. Credentials and the access reason travel as
gRPC metadata (`authorization`, `x-access-reason`), exactly as a Triton client sends headers.
"""

import json
import sys

import numpy as np
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException


def inputs_for(model, repeat=1):
    if model == "threat-triage":
        t = grpcclient.InferInput("FEATURES", [1, 8], "FP32")
        t.set_data_from_numpy(np.array([[0, 0, 0, 1.0, 1.0, 0.5, 1.0, 0]], dtype=np.float32))
        return [t]
    if model == "mission-summarizer":
        # `repeat` makes the message larger than the body prefix authz sees (1 KiB).
        words = ["urgent", "medevac", "for", "two", "casualties", "at", "the", "checkpoint"] * repeat
        t = grpcclient.InferInput("TEXT", [1, len(words)], "BYTES")
        t.set_data_from_numpy(np.array([[w.encode() for w in words]], dtype=np.object_))
        return [t]
    t = grpcclient.InferInput("TEXT", [1, 1], "BYTES")
    t.set_data_from_numpy(np.array([[b"hello, gateway"]], dtype=np.object_))
    return [t]


def plain(value):
    """numpy output -> JSON-friendly lists (bytes decoded)."""
    return [v.decode() if isinstance(v, bytes) else v for v in value.flatten().tolist()]


def run(client, case):
    headers = dict(case.get("headers", {}))
    if case.get("token"):
        headers["authorization"] = f"Bearer {case['token']}"
    if case.get("reason") is not None:
        headers["x-access-reason"] = case["reason"]
    try:
        call = case.get("call", "infer")
        if call == "server_live":
            return {"ok": client.is_server_live(headers=headers), "outputs": {}}
        if call == "metadata":
            meta = client.get_model_metadata(case["model"], headers=headers)
            return {"ok": True, "model_name": meta.name, "outputs": {}}
        result = client.infer(case["model"], inputs_for(case["model"], case.get("repeat", 1)),
                              headers=headers, compression_algorithm=case.get("compression"))
        response = result.get_response()
        outputs = {o.name: plain(result.as_numpy(o.name)) for o in response.outputs}
        return {"ok": True, "model_name": response.model_name, "outputs": outputs}
    except InferenceServerException as e:
        return {"ok": False, "status": e.status(), "message": e.message()}


def main():
    request = json.load(sys.stdin)
    client = grpcclient.InferenceServerClient(url=request["url"])
    for case in request["cases"]:
        out = run(client, case)
        out["name"] = case["name"]
        print(json.dumps(out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
