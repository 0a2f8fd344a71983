"""Regenerate the Python code of Unity's communicator protocol from our ``.proto`` files.

    nox -s protos          # in a venv of its own, with the pinned grpcio-tools
    python tools/generate_protos.py   # where grpcio-tools is installed

The generated ``*_pb2.py``, ``*_pb2.pyi`` and ``*_pb2_grpc.py`` are checked in beside the
``.proto`` files, with ``generated.json`` recording the sha256 of every source and output, so a
test fails when a ``.proto`` changed without regenerating (or a generated file was edited).
The pinned grpcio-tools bundles protoc 5.27: its code runs on every protobuf runtime from 5.27
to 7.x (a runtime accepts code from an older protoc, never from a newer one).
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = Path("asynctrainer/envs/unity/communicator_objects")
MANIFEST = ROOT / PACKAGE / "generated.json"


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def generated_files() -> list[Path]:
    folder = ROOT / PACKAGE
    return sorted(p for p in folder.iterdir() if p.name.endswith(("_pb2.py", "_pb2.pyi", "_pb2_grpc.py")))


def manifest() -> dict[str, object]:
    """What ``generated.json`` should say for the files as they are now."""
    folder = ROOT / PACKAGE
    return {
        "protos": {p.name: sha256(p) for p in sorted(folder.glob("*.proto"))},
        "outputs": {p.name: sha256(p) for p in generated_files()},
    }


def main() -> int:
    from importlib.metadata import version

    from grpc_tools import protoc

    for old in generated_files():
        old.unlink()
    protos = sorted(str(PACKAGE / p.name) for p in (ROOT / PACKAGE).glob("*.proto"))
    args = ["protoc", f"-I{ROOT}", f"--python_out={ROOT}", f"--pyi_out={ROOT}", f"--grpc_python_out={ROOT}", *protos]
    os.chdir(ROOT)
    code = protoc.main(args)
    if code != 0:
        print(f"protoc failed with exit code {code}", file=sys.stderr)
        return int(code)
    for proto in (ROOT / PACKAGE).glob("*.proto"):
        if "\nservice " not in proto.read_text(encoding="utf-8"):  # the gRPC plugin writes an empty module
            (ROOT / PACKAGE / f"{proto.stem}_pb2_grpc.py").unlink()
    data = {"generator": f"grpcio-tools {version('grpcio-tools')}", **manifest()}
    MANIFEST.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(f"generated {len(generated_files())} files from {len(protos)} .proto files into {PACKAGE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
