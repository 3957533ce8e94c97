"""Python actors built once per machine for the tests: componentize-py and the wasmtime compile take
~15-25 s per actor, so a build is kept in a folder named by its inputs and reused by later runs."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import uuid
from pathlib import Path

from theater_otp.pyactor.build import GENERATED_WORLD, build, input_stamp, read_spec
from theater_otp.worker.component import artifact_path


def kept_build(scratch: Path, manifests: list[str], builds: Path, keep_builds: int) -> Path:
    """Build the actors of the project copied at `scratch` (their manifests at the relative paths
    `manifests`) in the kept folder for their inputs, and return that kept project folder. A kept
    build seeds this run's component cache, so only the first run on a machine compiles; the
    `keep_builds` newest kept folders under `builds` stay, older ones are removed."""
    stamps = [input_stamp(read_spec(scratch / m)) for m in manifests]
    keep = builds / hashlib.sha256("".join(stamps).encode()).hexdigest()[:24]
    folder = keep / "project"
    if not all((folder / m).is_file() for m in manifests):
        keep.mkdir(parents=True, exist_ok=True)
        tmp = keep / f".project-{uuid.uuid4().hex[:8]}"
        shutil.copytree(scratch, tmp)
        os.replace(tmp, folder)
    for m in manifests:
        spec = read_spec(folder / m)
        kept_artifact = keep / f"{Path(m).stem}.cwasm"
        if spec.stamp_file.is_file() and kept_artifact.is_file():
            wanted = artifact_path(json.loads(spec.stamp_file.read_text())["wasm_sha256"])
            if not wanted.is_file():  # seed this run's component cache: no wasmtime compile
                wanted.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(kept_artifact, wanted)
        result = build(spec.manifest, say=lambda line: None)
        assert Path(result.wasm).is_file() and Path(result.artifact).is_file()
        assert result.world == GENERATED_WORLD and result.warnings == []
        if not kept_artifact.is_file():
            shutil.copyfile(result.artifact, kept_artifact)
    keep.touch()
    others = sorted((d for d in builds.iterdir() if d.is_dir() and d != keep and not d.name.startswith(".")),
                    key=lambda d: d.stat().st_mtime, reverse=True)
    for stale in others[keep_builds - 1:]:
        shutil.rmtree(stale, ignore_errors=True)
    return folder
