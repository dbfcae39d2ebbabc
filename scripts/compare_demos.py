"""Are two `make demo` outputs the same run? Stage by stage, what matches and the figures each printed.

    python scripts/compare_demos.py data/demo_a data/demo_b      (make demo ... --out DIR makes each)

Compares the demos file (a content hash per demo field), the base's weights, every evaluated episode of
both evaluations (videos' paths aside) and every record of the online run (clocks aside). Exit status 0
when every stage matches, 1 otherwise: the first stage that differs is where two runs (or two machines)
part. Why: "make demo twice gives the same figures" (docs/reliability.md, "Determinism") at full size.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from zprl.common.fingerprint import ckpt_weights_sha256, hdf5_hashes  # noqa: E402
from zprl.common.logging import read_json_lines  # noqa: E402
from zprl.demo_plan import DemoPaths  # noqa: E402


def episodes(eval_dir: str) -> list[dict]:
    with open(os.path.join(eval_dir, "eval_log.json")) as f:
        return [{k: v for k, v in e.items() if k != "video"} for e in json.load(f)["episodes"]]


def online_records(run_dir: str) -> list[dict]:
    return [{k: v for k, v in r.items() if not k.startswith("time/")}
            for r in read_json_lines(os.path.join(run_dir, "logs.json.txt"))]


def success(eps: list[dict]) -> str:
    wins = sum(bool(e["success"]) for e in eps)
    return f"{wins / len(eps):.2f} ({wins}/{len(eps)})"


def compare(a: str, b: str) -> list[tuple[str, bool, str]]:
    pa, pb = DemoPaths(a), DemoPaths(b)
    ha, hb = hdf5_hashes(pa.dataset), hdf5_hashes(pb.dataset)
    differ = [k for k in ha if ha.get(k) != hb.get(k)]
    wa, wb = ckpt_weights_sha256(pa.base_ckpt)[0], ckpt_weights_sha256(pb.base_ckpt)[0]
    base_a, base_b = episodes(pa.eval_base), episodes(pb.eval_base)
    online_a, online_b = online_records(pa.online), online_records(pb.online)
    zprl_a, zprl_b = episodes(pa.eval_zprl), episodes(pb.eval_zprl)
    return [
        ("demos file", not differ, f"data {ha['data'][:12]} / {hb['data'][:12]}"
         + (f"; differ: {', '.join(differ)}" if differ else "")),
        ("base weights", wa == wb, f"{wa[:12]} / {wb[:12]}"),
        ("eval base episodes", base_a == base_b, f"success {success(base_a)} / {success(base_b)}"),
        ("online records", online_a == online_b, f"{len(online_a)} / {len(online_b)} records"),
        ("eval ZPRL episodes", zprl_a == zprl_b, f"success {success(zprl_a)} / {success(zprl_b)}"),
    ]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("first", help="a demo output directory (make demo's --out; default data/demo)")
    p.add_argument("second", help="the other one")
    args = p.parse_args(argv)
    for d in (args.first, args.second):
        if not os.path.isfile(os.path.join(d, "summary.json")):
            sys.exit(f"compare_demos.py: {d} has no summary.json: not a finished demo output "
                     f"(run `python -m zprl.demo --out {d}` to finish it)")
    rows = compare(args.first, args.second)
    width = max(len(r[0]) for r in rows)
    print(f"{'stage'.ljust(width)}  same  {args.first} / {args.second}")
    for name, same, detail in rows:
        print(f"{name.ljust(width)}  {'yes ' if same else 'NO  '}  {detail}")
    return 0 if all(r[1] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
