"""The curl examples in models/README.md give the answers printed under them.

Each ```sh block holding `curl ... localhost:8000<path> ... -d '<json>'` is sent as written (to the
test's server) and its answer compared with the ```json block that follows: same outputs, names,
datatypes, shapes and data, floats to the README's rounding.
"""

from __future__ import annotations

import http.client
import json
import math
import re

import pytest

from models_under_test import MODELS_DIR

EXAMPLE = re.compile(
    r"```sh\n(?P<sh>curl[^`]*?)```\s*```json\n(?P<json>.*?)```",
    re.DOTALL,
)


def readme_examples() -> list[tuple[str, dict, dict]]:
    text = (MODELS_DIR / "README.md").read_text()
    examples = []
    for m in EXAMPLE.finditer(text):
        sh = m.group("sh")
        path = re.search(r"localhost:8000(\S+)", sh).group(1)
        body = re.search(r"-d '(.*?)'", sh, re.DOTALL).group(1)
        examples.append((path, json.loads(body), json.loads(m.group("json"))))
    return examples


EXAMPLES = readme_examples()


def test_readme_has_the_demo_examples():
    paths = {p for p, _, _ in EXAMPLES}
    for model in ("benchmark-echo", "threat-triage", "mission-summarizer", "simple-fp32"):
        assert f"/v2/models/{model}/infer" in paths


def close(a, b) -> bool:
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(close(x, y) for x, y in zip(a, b))
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(a, b, rel_tol=1e-5, abs_tol=1e-6)
    return a == b


@pytest.mark.parametrize("path,request_body,expected", EXAMPLES, ids=[p for p, _, _ in EXAMPLES])
def test_readme_example_answers_as_documented(modelserver, path, request_body, expected):
    conn = http.client.HTTPConnection("127.0.0.1", modelserver.http_port, timeout=30)
    try:
        conn.request("POST", path, body=json.dumps(request_body), headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        answer = json.loads(resp.read())
    finally:
        conn.close()
    assert resp.status == 200, answer
    assert answer["model_name"] == expected["model_name"]
    assert str(answer.get("model_version")) == expected["model_version"]
    got = {o["name"]: o for o in answer["outputs"]}
    assert set(got) == {o["name"] for o in expected["outputs"]}
    for want in expected["outputs"]:
        o = got[want["name"]]
        assert o["datatype"] == want["datatype"], want["name"]
        assert o["shape"] == want["shape"], want["name"]
        assert close(o["data"], want["data"]), f"{want['name']}: {o['data']} != README {want['data']}"
