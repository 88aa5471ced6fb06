"""Hash the tensors of every delta file under a folder (names, dtypes, shapes and bytes; metadata,
which holds times and versions, is left out), to show that a change of code left results unchanged.

    python bench/delta_hashes.py RUNS_FOLDER > hashes.json

``tests/test_behaviour.py`` reruns the commands whose hashes are checked in at
``tests/data/delta_hashes.json`` (made with the code before the job layer) and compares.
"""

from __future__ import annotations

import hashlib
import json
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


if __name__ == "__main__":
    print(json.dumps(folder_hashes(Path(sys.argv[1])), indent=1))
