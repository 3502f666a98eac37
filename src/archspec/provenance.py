"""Which spec an exported file was made from, read back without torch.

``archspec export`` writes the spec's canonical text, its sha256 (the content hash) and
archspec's version into every artefact: ONNX ``metadata_props``, and the extra files of a
torch.export (.pt2) or TorchScript (.pt) archive. Both archives are zip files and ONNX is a
protobuf message, so the entries are read here with the standard library alone, member by
member with bounded sizes: nothing is unpickled, no graph is loaded, and a hostile file
costs at most the bytes the limits allow.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import SpecError
from .yamlio import MAX_BYTES

__all__ = ["SPEC_KEY", "SHA256_KEY", "VERSION_KEY", "ARTEFACT_SUFFIXES", "Provenance",
           "embedded_spec", "is_artefact"]

SPEC_KEY = "archspec.spec.yaml"
SHA256_KEY = "archspec.sha256"
VERSION_KEY = "archspec.version"
ARTEFACT_SUFFIXES = (".onnx", ".pt2", ".pt")
_KEYS = (SPEC_KEY, SHA256_KEY, VERSION_KEY)


@dataclass(frozen=True)
class Provenance:
    """The spec an artefact carries: its canonical text, the sha256 stored beside it (it
    matches the text, or ``embedded_spec`` refuses the file) and archspec's version."""

    spec_text: str
    sha256: str
    version: str


def is_artefact(path: str | os.PathLike) -> bool:
    """Whether ``path`` names an exported artefact (by suffix) rather than a spec file."""
    return Path(path).suffix.lower() in ARTEFACT_SUFFIXES


def embedded_spec(path: str | os.PathLike) -> Provenance:
    """The provenance ``archspec export`` stored in ``path``; SpecError (located at the
    file) when there is none, it is unreadable, or the spec does not match its sha256."""
    where = os.fspath(path)
    try:
        with open(path, "rb") as fh:
            head = fh.read(4)
            fh.seek(0)
            entries = _from_zip(fh, where) if head == b"PK\x03\x04" else _from_onnx(fh, where)
    except OSError as e:
        raise SpecError.at(f"cannot read: {e.strerror}", where) from None
    if SPEC_KEY not in entries:
        raise SpecError.at("holds no archspec spec (files written by `archspec export` do; "
                           "for a checkpoint of `archspec build`, use "
                           "archspec.load_checkpoint)", where)
    try:
        text = entries[SPEC_KEY].decode("utf-8")
        sha = entries.get(SHA256_KEY, b"").decode("ascii")
        version = entries.get(VERSION_KEY, b"").decode("ascii")
    except UnicodeDecodeError:
        raise SpecError.at("its archspec provenance is not text", where) from None
    if hashlib.sha256(entries[SPEC_KEY]).hexdigest() != sha:
        raise SpecError.at("the embedded spec does not match its sha256: the file was "
                           "altered", where)
    return Provenance(text, sha, version)


def _from_zip(fh, where: str) -> dict[str, bytes]:
    """The archive's ``<archive>/extra/<key>`` members (torch.export and TorchScript)."""
    try:
        with zipfile.ZipFile(fh) as zf:
            out = {}
            for info in zf.infolist():
                parts = info.filename.split("/")
                if len(parts) == 3 and parts[1] == "extra" and parts[2] in _KEYS:
                    if info.file_size > MAX_BYTES:  # declared size, checked before reading
                        raise SpecError.at(f"{parts[2]} is {info.file_size:,} bytes; a spec "
                                           f"is at most {MAX_BYTES:,}", where)
                    with zf.open(info) as member:
                        out[parts[2]] = member.read(MAX_BYTES + 1)[:MAX_BYTES]
            return out
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, ValueError,
            EOFError) as e:
        raise SpecError.at(f"not a readable archive: {e}", where) from None


# ONNX ModelProto: metadata_props is field 14, each a StringStringEntryProto (key 1, value 2).
_METADATA_FIELD = 14


def _from_onnx(fh, where: str) -> dict[str, bytes]:
    """Top-level ``metadata_props`` entries of an ONNX file, by walking the protobuf wire
    format: other fields (the graph, its weights) are skipped by length, not parsed."""
    size = os.fstat(fh.fileno()).st_size
    out: dict[str, bytes] = {}
    while fh.tell() < size:
        tag = _varint(fh, where)
        field, wire = tag >> 3, tag & 7
        if wire == 0:
            _varint(fh, where)
        elif wire == 1:
            fh.seek(8, os.SEEK_CUR)
        elif wire == 5:
            fh.seek(4, os.SEEK_CUR)
        elif wire == 2:
            length = _varint(fh, where)
            if fh.tell() + length > size:
                raise SpecError.at("not an ONNX model (a field runs past the end)", where)
            if field == _METADATA_FIELD and length <= 2 * MAX_BYTES:
                key, value = _entry(fh.read(length), where)
                if key in _KEYS:
                    out[key] = value
            else:
                fh.seek(length, os.SEEK_CUR)
        else:
            raise SpecError.at("not an ONNX model (unknown protobuf wire type)", where)
    return out


def _varint(fh, where: str) -> int:
    value = 0
    for shift in range(0, 64, 7):
        byte = fh.read(1)
        if not byte:
            raise SpecError.at("not an ONNX model (truncated)", where)
        value |= (byte[0] & 0x7F) << shift
        if not byte[0] & 0x80:
            return value
    raise SpecError.at("not an ONNX model (a varint longer than 64 bits)", where)


def _entry(data: bytes, where: str) -> tuple[str, bytes]:
    import io

    buf, fields = io.BytesIO(data), {}
    while buf.tell() < len(data):
        tag = _varint(buf, where)
        if tag & 7 != 2:
            raise SpecError.at("not an ONNX model (a metadata entry is malformed)", where)
        length = _varint(buf, where)
        fields[tag >> 3] = buf.read(length)
    try:
        return fields.get(1, b"").decode("utf-8"), fields.get(2, b"")
    except UnicodeDecodeError:
        return "", b""
