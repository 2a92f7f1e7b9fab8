"""Reads a subscriber's feeds from a running darkscope aggregator with
clients we did not write, and reports what they saw as JSON on stdout:

- taxii2-client discovers the TAXII 2.1 server, lists the collections and
  pages through every collection's objects and manifest (also with
  added_after);
- the OASIS stix2-validator checks every page of objects and the STIX
  bundle of the day, each wrapped as a bundle;
- Python's csv module parses the Shadowserver-style CSV of the day.

Used by aggregator/tests/feeds_interop.rs; run by hand as
  python check_feeds.py --url http://127.0.0.1:8080 --token dst_... --date 2026-11-21
"""

import argparse
import collections
import csv
import io
import json
import uuid

import requests
from stix2validator import ValidationOptions, validate_instance
from taxii2client.v21 import Server, as_pages


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--date", required=True)
    p.add_argument("--per-request", type=int, default=5)
    a = p.parse_args()

    options = ValidationOptions(version="2.1")
    errors, warnings, validated = [], 0, 0

    def validate(objects):
        nonlocal warnings, validated
        bundle = {"type": "bundle", "id": f"bundle--{uuid.uuid4()}", "objects": objects}
        r = validate_instance(bundle, options)
        for o in r.errors:
            errors.append(str(o))
        warnings += len(r.warnings)
        validated += len(objects)

    out = {"collections": {}}
    # HTTP Basic with the token as password, as TAXII clients send it.
    server = Server(f"{a.url}/taxii2/", user="subscriber", password=a.token)
    out["title"] = server.title
    root = server.default
    out["api_root"] = root.url
    out["versions"] = root.versions
    for c in root.collections:
        pages = list(as_pages(c.get_objects, per_request=a.per_request))
        objects = []
        for page in pages:
            objs = page.get("objects", [])
            assert len(objs) <= a.per_request, len(objs)
            if objs:
                validate(objs)
            objects.extend(objs)
        manifest = [
            m for page in as_pages(c.get_manifest, per_request=a.per_request)
            for m in page.get("objects", [])
        ]
        added = sorted(m["date_added"] for m in manifest)
        mid = added[len(added) // 2] if added else "1970-01-01T00:00:00Z"
        after = [
            o for page in as_pages(c.get_objects, per_request=a.per_request, added_after=mid)
            for o in page.get("objects", [])
        ]
        types = collections.Counter(o["type"] for o in objects)
        out["collections"][c.title] = {
            "id": c.id,
            "can_read": c.can_read,
            "can_write": c.can_write,
            "pages": len(pages),
            "objects": len(objects),
            "distinct_ids": len({o["id"] for o in objects}),
            "types": dict(types),
            "ips": sorted(o["value"] for o in objects if o["type"] in ("ipv4-addr", "ipv6-addr")),
            "indicator_patterns": sorted(o["pattern"] for o in objects if o["type"] == "indicator"),
            "sightings": [
                {"count": o["count"], "where": o["where_sighted_refs"]}
                for o in objects if o["type"] == "sighting"
            ],
            "manifest": len(manifest),
            "after_mid": len(after),
            "after_mid_expected": sum(1 for d in added if d > mid),
        }

    auth = {"Authorization": f"Bearer {a.token}"}
    bundle = requests.get(
        f"{a.url}/api/v1/feeds/events.stix", params={"date": a.date}, headers=auth, timeout=30
    )
    bundle.raise_for_status()
    b = bundle.json()
    validate(b["objects"])
    out["bundle_objects"] = len(b["objects"])

    r = requests.get(
        f"{a.url}/api/v1/feeds/events.csv", params={"date": a.date}, headers=auth, timeout=30
    )
    r.raise_for_status()
    reader = csv.DictReader(io.StringIO(r.text, newline=""))
    rows = list(reader)
    out["csv"] = {
        "header": reader.fieldnames,
        "rows": len(rows),
        "ips": sorted({row["src_ip"] for row in rows}),
        "short_rows": sum(1 for row in rows if None in row.values()),
    }
    out["validation"] = {"errors": errors, "warnings": warnings, "objects": validated}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
