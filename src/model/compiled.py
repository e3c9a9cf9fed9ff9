"""The trees as native code (lleaves), compiled once per version and kept beside it.

Compiling a 300-tree model takes about 10 s on a quiet 2-core machine and over a minute on a busy
one; loading the compiled object takes about 10 ms. So the registry compiles a version when it is
registered and keeps the object in its store, keyed by everything the code depends on (lleaves,
LLVM, the CPU it was built for), its hash in the registry's database. A worker loads it, checks the
hash, and compiles only on a miss. The startup self-check still compares every engine's output with
the training-time probabilities to 1e-9.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import platform
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

# The compiled trees' entry point, taking raw addresses: (rows, out, first row, end row).
ENTRY = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int32, ctypes.c_int32)
ENTRY_NAME = "forest_root"  # lleaves' default name for it


@functools.cache
def build_key() -> str:
    """What a compiled object depends on besides the model: the compiler and the CPU (code built
    with one CPU's features may crash on another)."""
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    try:
        features = llvm.get_host_cpu_features().flatten()
    except RuntimeError:  # LLVM cannot read them here; lleaves then builds without any
        features = ""
    cpu = hashlib.sha256(f"{llvm.get_host_cpu_name()}|{features}".encode()).hexdigest()[:12]
    versions = f"lleaves-{metadata.version('lleaves')}-llvmlite-{metadata.version('llvmlite')}"
    return f"{versions}-{platform.machine()}-{cpu}"


def kept_trees(object_code: bytes) -> tuple[Any, Any]:
    """(entry point, the engine that keeps it alive) from kept object code, with llvmlite alone:
    what lleaves does for a cached build (lleaves.llvm_binding), without importing lleaves,
    whose data module imports pandas when it is installed (0.3 s and its memory in every worker).
    The startup self-check holds the result to the training-time probabilities."""
    import llvmlite.binding as llvm

    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    target = llvm.Target.from_triple(llvm.get_process_triple())
    try:
        features = llvm.get_host_cpu_features().flatten()
    except RuntimeError:  # as lleaves: no features when LLVM cannot read them
        features = ""
    machine = target.create_target_machine(
        cpu=llvm.get_host_cpu_name(), features=features, reloc="pic", codemodel="large"
    )
    module = llvm.parse_assembly("")  # empty: the code comes from the object
    engine = llvm.create_mcjit_compiler(module, machine)
    module.data_layout = str(engine.target_data)
    engine.set_object_cache(getbuffer_func=lambda _: object_code)
    engine.finalize_object()
    engine.run_static_constructors()
    return ENTRY(engine.get_function_address(ENTRY_NAME)), engine


def compiled_trees(model_text: str, object_code: bytes | None = None) -> tuple[Any, Any, bytes]:
    """(entry point, what keeps it alive, the object code). With `object_code` (verified by the
    caller) nothing is compiled. lleaves' own predict() spends more time converting arrays and
    building ctypes pointers than in the trees for a single row, so the service calls the entry
    point with the arrays' addresses."""
    if object_code is not None:
        entry, engine = kept_trees(object_code)
        return entry, engine, object_code
    import lleaves

    with tempfile.TemporaryDirectory() as folder:  # private to this process (mode 0700)
        model_file, cache = Path(folder) / "model.txt", Path(folder) / "trees.o"
        model_file.write_text(model_text)
        compiled = lleaves.Model(model_file=str(model_file))
        compiled.compile(cache=str(cache))  # writes the object it compiled into `cache`
        code = cache.read_bytes()
    entry = ctypes.cast(compiled._c_entry_func, ENTRY)  # private in lleaves 1.3 (pinned)
    return entry, compiled, code


class FolderBuilds:
    """Compiled trees kept in an artifact folder the service serves directly (ARTIFACTS_DIR), in
    `.builds/` with their sha256 beside them. The folder is trusted as its pickles are; the hash
    catches a torn or truncated write, and a file that does not match is compiled anew. A
    read-only folder (a container's volume) just compiles every time, as before."""

    def __init__(self, folder: Path, version: str) -> None:
        self.path = folder / ".builds" / f"{version}-{build_key()}.o"

    def read(self) -> bytes | None:
        try:
            code = self.path.read_bytes()
            expected = self.path.with_suffix(".sha256").read_text().strip()
        except OSError:
            return None
        return code if hashlib.sha256(code).hexdigest() == expected else None

    def keep(self, object_code: bytes) -> None:
        from src.fileio import write_bytes_atomic

        write_bytes_atomic(self.path, object_code)
        digest = hashlib.sha256(object_code).hexdigest()
        write_bytes_atomic(self.path.with_suffix(".sha256"), digest.encode())
