"""The generated protobuf and gRPC modules of opu.v1 (and of the health and reflection services).

Nothing generated is committed: on first import the stubs are made from the .proto files with
Debian's ``protoc --python_out`` and ``grpc_python_plugin`` (packages protobuf-compiler and
protobuf-compiler-grpc), into a folder keyed by a hash of the sources and of the compiler, and
made again whenever a .proto or the compiler changes. Importing the package does it, so
``python3 -c 'import opu_toolkit'`` generates ahead of time (scripts/run_tests.sh runs it first, so
a missing compiler fails early and clearly).

Where the stubs go: ``$OPU_PYTHON_GEN`` when set, else ``opu_toolkit/_generated/`` beside this
file when that folder is writable (the checkout; it is git-ignored), else
``$XDG_CACHE_HOME/opu_toolkit`` (``~/.cache/opu_toolkit``). The folder is put on ``sys.path``:
the modules keep the contract's own import names, ``opu.v1.opu_pb2`` and ``opu.v1.opu_pb2_grpc``,
so that the descriptor's file name is ``opu/v1/opu.proto``, as the C++ server reports it through
reflection.
"""

from __future__ import annotations

import fcntl
import hashlib
import importlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

_HERE = Path(__file__).resolve().parent
_OWN_PROTOS = _HERE / "protos"  # health and reflection, for lack of a Debian package


def proto_root() -> Path:
    """The folder that holds opu/v1/opu.proto: $OPU_PROTO_DIR, else the repository's proto/."""
    env = os.environ.get("OPU_PROTO_DIR")
    root = Path(env) if env else _HERE.parent.parent / "proto"
    if not (root / "opu" / "v1" / "opu.proto").is_file():
        raise FileNotFoundError(
            f"opu_toolkit: opu/v1/opu.proto not found under '{root}' "
            "(set OPU_PROTO_DIR to the folder holding opu/v1/opu.proto, the repository's proto/)")
    return root


_SOURCES = [  # (import root, file relative to it)
    (None, "opu/v1/opu.proto"),
    (_OWN_PROTOS, "opu_toolkit_std/health.proto"),
    (_OWN_PROTOS, "opu_toolkit_std/reflection.proto"),
]


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise FileNotFoundError(
            f"opu_toolkit: '{name}' not found on PATH; it generates the Python stubs of "
            f"opu/v1/opu.proto (Debian package {package}; scripts/bootstrap.sh installs it)")
    return path


def _key(root: Path, protoc: str, plugin: str) -> str:
    digest = hashlib.sha256()
    for base, rel in _SOURCES:
        digest.update(rel.encode())
        digest.update(((base or root) / rel).read_bytes())
    version = subprocess.run([protoc, "--version"], capture_output=True, text=True, check=False)
    digest.update(version.stdout.encode())
    digest.update(plugin.encode())
    digest.update(str(os.stat(plugin).st_mtime_ns).encode())
    return digest.hexdigest()[:16]


def _gen_dir() -> Path:
    env = os.environ.get("OPU_PYTHON_GEN")
    if env:
        return Path(env)
    local = _HERE / "_generated"
    try:
        local.mkdir(exist_ok=True)
        if os.access(local, os.W_OK):
            return local
    except OSError:
        pass
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "opu_toolkit"
    cache.mkdir(parents=True, exist_ok=True)
    return cache


def generate() -> Path:
    """Makes the stubs when they are missing or stale; returns the folder that holds them."""
    root = proto_root()
    protoc = _tool("protoc", "protobuf-compiler")
    plugin = _tool("grpc_python_plugin", "protobuf-compiler-grpc")
    key = _key(root, protoc, plugin)
    base = _gen_dir()
    base.mkdir(parents=True, exist_ok=True)
    out = base / key
    if (out / "STAMP").is_file():
        return out
    # One process generates; others wait on the lock, then find the stamp.
    with open(base / ".lock", "w", encoding="utf-8") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (out / "STAMP").is_file():
            return out
        tmp = Path(tempfile.mkdtemp(prefix=f".{key}-", dir=base))
        try:
            for import_root, rel in _SOURCES:
                import_root = import_root or root
                cmd = [protoc, f"-I{import_root}", f"--python_out={tmp}", f"--grpc_python_out={tmp}",
                       f"--plugin=protoc-gen-grpc_python={plugin}", str(import_root / rel)]
                done = subprocess.run(cmd, capture_output=True, text=True, check=False)
                if done.returncode != 0:
                    raise RuntimeError(f"opu_toolkit: generating stubs failed: {' '.join(cmd)}\n"
                                       f"{done.stderr.strip()}")
            for folder in ("opu", "opu/v1", "opu_toolkit_std"):
                (tmp / folder / "__init__.py").touch()
            (tmp / "STAMP").write_text(key + "\n", encoding="utf-8")
            if out.exists():
                shutil.rmtree(out)
            os.rename(tmp, out)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        # Older generations of this folder are left for other checkouts that may share it.
    return out


def _load() -> tuple[ModuleType, ...]:
    folder = str(generate())
    if folder not in sys.path:
        sys.path.insert(0, folder)
    names = ("opu.v1.opu_pb2", "opu.v1.opu_pb2_grpc", "opu_toolkit_std.health_pb2",
             "opu_toolkit_std.health_pb2_grpc", "opu_toolkit_std.reflection_pb2",
             "opu_toolkit_std.reflection_pb2_grpc")
    return tuple(importlib.import_module(name) for name in names)


pb, pb_grpc, health_pb, health_grpc, reflection_pb, reflection_grpc = _load()
