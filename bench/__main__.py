"""`python -m bench`: run the benchmarks and write build/bench/results.json."""

from __future__ import annotations

import json
import os
import platform

from bench import codec


def main() -> None:
    results: dict[str, object] = {"machine": platform.machine(), "cpus": os.cpu_count()}
    print("codec (GSSX_ACCEPT_SEC_CONTEXT, 1 KiB token), microseconds per message")
    c = codec.measure()
    for k, v in c.items():
        print(f"  {k:24s} {v:8.1f}")
    results["codec"] = c
    os.makedirs("build/bench", exist_ok=True)
    with open("build/bench/results.json", "w") as f:
        json.dump(results, f, indent=2)
    print("wrote build/bench/results.json")


if __name__ == "__main__":
    main()
