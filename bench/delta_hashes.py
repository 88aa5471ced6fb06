"""Hash the tensors of every delta file under a folder (names, dtypes, shapes and bytes; metadata,
which holds times and versions, is left out), to show that a change of code left results unchanged.

    python bench/delta_hashes.py RUNS_FOLDER > hashes.json
    python bench/delta_hashes.py RUNS_FOLDER --record "main at REV"   # this machine's kind, into the test's file

``tests/test_behaviour.py`` reruns the commands whose hashes are checked in at
``tests/data/delta_hashes.json`` and compares. CPU float32 results differ in the last bits from one
processor to another (its BLAS kernels add in another order, and training loops carry the
difference on), so the hashes are kept per machine kind (``machine_kind``): a new kind is recorded
by running the test commands with code whose results were checked on a recorded kind.
"""

from __future__ import annotations

import hashlib
import json
import platform
import sys
from pathlib import Path


def tensor_hash(path: Path) -> str:
    from safetensors import safe_open

    h = hashlib.sha256()
    with safe_open(str(path), framework="pt") as f:
        for k in sorted(f.keys()):
            t = f.get_tensor(k).contiguous()
            h.update(k.encode())
            h.update(str(t.dtype).encode())
            h.update(str(tuple(t.shape)).encode())
            h.update(t.numpy().tobytes())
    return h.hexdigest()


def folder_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): tensor_hash(p) for p in sorted(root.rglob("*.safetensors"))}


def machine_kind() -> str:
    """What fixes CPU float32 results bit for bit: torch's version, the processor (family and
    model, and whether it has AMX units), and the number of threads."""
    import torch

    info: dict[str, str] = {}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            key, _, value = line.partition(":")
            info.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    cpu = f"family {info.get('cpu family', '?')} model {info.get('model', '?')}"
    cpu += " amx" if "amx_tile" in info.get("flags", "").split() else ""
    return f"torch {torch.__version__}, {platform.machine()} {cpu}, {torch.get_num_threads()} threads"


def main() -> None:
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "runs", type=Path, help="a folder holding one sub-folder per test case, named as the test names it"
    )
    ap.add_argument(
        "--record", metavar="NOTE", help="add these hashes to the test's file as this machine kind's"
    )
    args = ap.parse_args()
    hashes = {
        f"{case.name}/{k}": v for case in sorted(args.runs.iterdir()) for k, v in folder_hashes(case).items()
    }
    if not args.record:
        print(json.dumps(hashes, indent=1, sort_keys=True))
        return
    path = Path(__file__).resolve().parent.parent / "tests/data/delta_hashes.json"
    table = json.loads(path.read_text())
    cases = set(next(iter(table["kinds"].values()))["hashes"])
    if set(hashes) != cases:
        sys.exit(f"{args.runs} holds {len(hashes)} files, the recorded kinds {len(cases)}: run every case")
    table["kinds"][machine_kind()] = {"recorded": args.record, "hashes": hashes}
    path.write_text(json.dumps(table, indent=1) + "\n")
    print(f"{path}: recorded {machine_kind()}")


if __name__ == "__main__":
    main()
