#!/usr/bin/env python3
"""Writes an OCI image layout of mlgate.wasm in the "compat" variant that Istio's Wasm image
fetcher reads, with nothing but the Python standard library (no container engine).

    python3 deploy/oci/build.py WASM OUT_DIR [--tag TAG] [--image REF]

OUT_DIR gets:
  oci-layout, index.json, blobs/sha256/...   the image layout (one manifest, tagged TAG)
  mlgate.wasm.sha256   sha256 of the .wasm itself: WasmPlugin.sha256 for file:// or http(s):// URLs
  manifest.sha256      sha256 of the image manifest: WasmPlugin.sha256 for an oci:// URL (Istio
                       compares an OCI image's *manifest* digest with `sha256`, not the module's)
  wasmplugin.yaml      deploy/istio/wasmplugin.yaml with `url: oci://REF` and that `sha256` filled in

The image: exactly one layer, `application/vnd.oci.image.layer.v1.tar+gzip`, a tar holding
`plugin.wasm`; the manifest carries `module.wasm.image/variant: compat`. Every timestamp, owner
and the gzip header are fixed, so the same .wasm always gives the same digests.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import sys
import tarfile
from pathlib import Path

LAYER_MEDIA_TYPE = "application/vnd.oci.image.layer.v1.tar+gzip"
CONFIG_MEDIA_TYPE = "application/vnd.oci.image.config.v1+json"
MANIFEST_MEDIA_TYPE = "application/vnd.oci.image.manifest.v1+json"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
VARIANT_ANNOTATION = "module.wasm.image/variant"
EPOCH = "1970-01-01T00:00:00Z"
ROOT = Path(__file__).resolve().parents[2]


def canonical(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def layer_tar(wasm: bytes) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        info = tarfile.TarInfo("plugin.wasm")
        info.size = len(wasm)
        info.mode = 0o644
        info.mtime = 0
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        tar.addfile(info, io.BytesIO(wasm))
    return buf.getvalue()


def gzip_fixed(data: bytes) -> bytes:
    buf = io.BytesIO()
    # filename="" and mtime=0: no name and no time in the gzip header.
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, compresslevel=9, mtime=0) as gz:
        gz.write(data)
    return buf.getvalue()


def build(wasm_path: Path, out: Path, tag: str, image: str) -> dict:
    wasm = wasm_path.read_bytes()
    if wasm[:4] != b"\0asm":
        raise SystemExit(f"{wasm_path}: not a WebAssembly module")
    tar = layer_tar(wasm)
    layer = gzip_fixed(tar)
    config = canonical({
        "architecture": "wasm",
        "os": "wasip1",
        "created": EPOCH,
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{sha256(tar)}"]},
        "history": [{"created": EPOCH, "created_by": "deploy/oci/build.py: plugin.wasm"}],
    })
    manifest = canonical({
        "schemaVersion": 2,
        "mediaType": MANIFEST_MEDIA_TYPE,
        "config": {"mediaType": CONFIG_MEDIA_TYPE, "digest": f"sha256:{sha256(config)}", "size": len(config)},
        "layers": [{"mediaType": LAYER_MEDIA_TYPE, "digest": f"sha256:{sha256(layer)}", "size": len(layer)}],
        "annotations": {VARIANT_ANNOTATION: "compat", "org.opencontainers.image.title": "mlgate"},
    })
    index = canonical({
        "schemaVersion": 2,
        "mediaType": INDEX_MEDIA_TYPE,
        "manifests": [{
            "mediaType": MANIFEST_MEDIA_TYPE, "digest": f"sha256:{sha256(manifest)}", "size": len(manifest),
            "annotations": {"org.opencontainers.image.ref.name": tag},
        }],
    })

    # Written next to OUT_DIR and renamed over it, so no stale blob from an older build stays.
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    blobs = tmp / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    for blob in (layer, config, manifest):
        (blobs / sha256(blob)).write_bytes(blob)
    (tmp / "oci-layout").write_bytes(canonical({"imageLayoutVersion": "1.0.0"}))
    (tmp / "index.json").write_bytes(index)
    (tmp / "mlgate.wasm.sha256").write_text(sha256(wasm) + "\n")
    (tmp / "manifest.sha256").write_text(sha256(manifest) + "\n")
    template = (ROOT / "deploy" / "istio" / "wasmplugin.yaml").read_text()
    (tmp / "wasmplugin.yaml").write_text(pin_wasmplugin(template, f"oci://{image}", sha256(manifest)))
    shutil.rmtree(out, ignore_errors=True)
    os.rename(tmp, out)
    return {"wasm_sha256": sha256(wasm), "manifest_digest": f"sha256:{sha256(manifest)}", "tag": tag}


def pin_wasmplugin(template: str, url: str, digest_hex: str) -> str:
    """The committed WasmPlugin with its `url:` line replaced and a `sha256:` line after it."""
    out, done = [], False
    for line in template.splitlines():
        stripped = line.lstrip()
        if stripped.startswith("sha256:"):
            continue
        if stripped.startswith("url:") and not done:
            indent = line[: len(line) - len(stripped)]
            out.append(f"{indent}url: {url}")
            out.append(f"{indent}# The image manifest's digest (Istio checks it after pulling by tag).")
            out.append(f"{indent}sha256: {digest_hex}")
            done = True
            continue
        out.append(line)
    if not done:
        raise SystemExit("deploy/istio/wasmplugin.yaml has no `url:` line")
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("wasm", type=Path)
    p.add_argument("out", type=Path)
    p.add_argument("--tag", default="0.1.0", help="the image's tag in index.json (default 0.1.0)")
    p.add_argument("--image", default=os.environ.get("MLGATE_IMAGE", "registry.example.com/mlgate:0.1.0"),
                   help="registry/repository:tag for the pinned wasmplugin.yaml (env MLGATE_IMAGE)")
    a = p.parse_args(argv)
    info = build(a.wasm, a.out, a.tag, a.image)
    print(f"{a.out}: oci:{a.out}:{info['tag']} manifest {info['manifest_digest']}, plugin.wasm sha256 {info['wasm_sha256']}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
