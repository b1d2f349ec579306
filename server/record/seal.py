"""The ledger's seal: an HMAC-SHA256 that only a holder of the ledger's key can make.

Every record the loop (or the person, through the editor) appends to experiments.jsonl carries
`"seal": {"n": <sequence number>, "mac": <hex>}`; the mac covers the sequence number and the record's
canonical JSON (sorted keys, no spaces, the seal left out). The sequence number grows by one with every
sealed record, so a sealed line copied to the end of the file (a replay) is refused as well as an edited
one (a copied seal on another body does not match it).

The key lives in `.nightlab/<tag>/ledger.key` (JSON: the key in hex, and `since`, the size of
experiments.jsonl when the key was made: the records before that offset were written before sealing
existed and are trusted as legacy; every record after it must be sealed). Under the sandbox (run/sandbox.py)
training cannot see `.nightlab/` at all, so it can neither read the key nor touch the ledger. With
`[run] sandbox = "off"` (or where bubblewrap cannot run) training runs as the user and CAN read the key:
the seal alone does not hold then, and the ledger's live check (ledger.py: the loop knows the file's
size and hash after its own last append, and voids whatever appeared behind its back) is what catches a
forgery made while the loop runs.

Must not import: git, torch, anything of nightlab above core.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KEY_NAME = "ledger.key"
SEAL = "seal"  # the record's field that holds the seal


@dataclass(frozen=True)
class Key:
    secret: bytes
    since: int  # experiments.jsonl's size when sealing began: earlier records are legacy

    def to_text(self) -> str:
        return json.dumps({"version": 1, "key": self.secret.hex(), "since": self.since}) + "\n"


def canonical(record: dict[str, Any]) -> bytes:
    body = {k: v for k, v in record.items() if k != SEAL}
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def mac(key: Key, seq: int, record: dict[str, Any]) -> str:
    return hmac.new(key.secret, f"{seq}\n".encode() + canonical(record), hashlib.sha256).hexdigest()


def sealed(key: Key, seq: int, record: dict[str, Any]) -> dict[str, Any]:
    """The record with its seal (sequence number `seq`)."""
    return {**{k: v for k, v in record.items() if k != SEAL}, SEAL: {"n": seq, "mac": mac(key, seq, record)}}


def has_seal(record: dict[str, Any]) -> bool:
    return SEAL in record


def verify(key: Key | None, record: dict[str, Any]) -> int | None:
    """The record's sequence number when its seal is the key's, else None."""
    seal = record.get(SEAL)
    if key is None or not isinstance(seal, dict) or not isinstance(seal.get("n"), int):
        return None
    want = mac(key, seal["n"], record)
    return seal["n"] if isinstance(seal.get("mac"), str) and hmac.compare_digest(want, seal["mac"]) else None


def read_key(folder: Path) -> Key | None:
    """The ledger's key, or None when there is none (a ledger from before sealing, or a new one).
    A key file that cannot be read is an error a person must see: sealed records would all fail."""
    path = Path(folder) / KEY_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Key(bytes.fromhex(data["key"]), int(data["since"]))
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise KeyUnreadable(f"{path} cannot be read ({exc})") from None


class KeyUnreadable(Exception):
    pass


def new_key(since: int) -> Key:
    return Key(secrets.token_bytes(32), since)


def write_key(folder: Path, key: Key, exclusive: bool = True) -> bool:
    """Write the key file readable by its owner only. `exclusive`: only if none exists (two writers
    making a key at once: one wins, the other reads it). False when one already existed."""
    path = Path(folder) / KEY_NAME
    tmp = path.with_name(f".{KEY_NAME}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, key.to_text().encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        if exclusive:
            try:
                os.link(tmp, path)  # atomic, and fails when the file exists
            except FileExistsError:
                return False
        else:
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return True


def key_text(folder: Path) -> str | None:
    try:
        return (Path(folder) / KEY_NAME).read_text(encoding="utf-8")
    except OSError:
        return None
