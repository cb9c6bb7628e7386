"""People are keys: Ed25519 signatures over canonical statements.

A person's identity is the private key they hold; the policy lists each person's public key
(OpenSSH format, so ``~/.ssh/id_ed25519.pub`` works). A request that can lead to an action held
for approval is a signed statement, and so is every approval. Nothing here believes a name:
:func:`verify_statement` checks the signature against the key the policy lists for that name.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field

from mlops_supervisor.policies.errors import UsageError

__all__ = [
    "Signed",
    "default_key_dir",
    "fingerprint",
    "generate_key",
    "load_private_key",
    "parse_public_key",
    "public_line",
    "sign_statement",
    "statement_digest",
    "verify_statement",
]


class Signed(BaseModel):
    """A statement, who signed it, the fingerprint of the key they signed with, and the signature (hex)."""

    model_config = ConfigDict(frozen=True)

    statement: dict[str, Any]
    signer: str = Field(min_length=1)
    key: str = Field(description="sha256 fingerprint of the signer's public key")
    signature: str = Field(pattern=r"^[0-9a-f]{128}$")


def _canonical(statement: Mapping[str, Any]) -> bytes:
    return json.dumps(dict(statement), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def statement_digest(statement: Mapping[str, Any]) -> str:
    """sha256 of a statement's canonical JSON."""
    return hashlib.sha256(_canonical(statement)).hexdigest()


def parse_public_key(line: str) -> Ed25519PublicKey:
    """An OpenSSH ``ssh-ed25519 AAAA... [comment]`` line as a key; ``ValueError`` for anything else."""
    try:
        key = serialization.load_ssh_public_key(line.strip().encode("ascii"))
    except (ValueError, UnicodeEncodeError) as exc:
        raise ValueError(f"not an OpenSSH public key ({exc})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"an {type(key).__name__.removeprefix('_')} key; only ssh-ed25519 keys are accepted")
    return key


def public_line(key: Ed25519PublicKey, comment: str = "") -> str:
    """The OpenSSH line of ``key``, with ``comment`` appended when given."""
    line = key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode("ascii")
    return f"{line} {comment}".strip()


def fingerprint(key: Ed25519PublicKey) -> str:
    """``sha256:<hex>`` of the raw public key: a digest, so no redactor mistakes it for a secret."""
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return "sha256:" + hashlib.sha256(raw).hexdigest()


def load_private_key(path: Path) -> Ed25519PrivateKey:
    """The Ed25519 private key at ``path`` (OpenSSH or PEM); ``UsageError`` naming what is wrong."""
    path = Path(path).expanduser()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(
            f"no private key at {path}; make one with `mlops-supervisor keys init NAME`, or name yours with "
            "MLOPS_KEY=PATH (an Ed25519 key, e.g. ~/.ssh/id_ed25519)"
        ) from None
    except OSError as exc:
        raise UsageError(f"private key {path} cannot be read: {exc}") from None
    password = os.environ.get("MLOPS_KEY_PASSPHRASE")
    secret = password.encode("utf-8") if password else None
    try:
        if data.lstrip().startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----"):
            key: Any = serialization.load_ssh_private_key(data, password=secret)
        else:
            key = serialization.load_pem_private_key(data, password=secret)
    except (ValueError, TypeError) as exc:
        hint = " (it is encrypted: set MLOPS_KEY_PASSPHRASE)" if "encrypt" in str(exc).lower() else ""
        raise UsageError(f"private key {path} cannot be loaded: {exc}{hint}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise UsageError(f"private key {path} is not an Ed25519 key; make one with `mlops-supervisor keys init NAME`")
    return key


def default_key_dir() -> Path:
    """Where ``keys init`` keeps private keys: ``MLOPS_KEY_DIR``, else the user's config directory."""
    explicit = os.environ.get("MLOPS_KEY_DIR")
    if explicit:
        return Path(explicit).expanduser()
    config = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config) / "mlops-supervisor" / "keys"


def generate_key(path: Path, comment: str) -> str:
    """Write a new Ed25519 private key to ``path`` (0600, refusing to overwrite); its public line."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    data = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
    )
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UsageError(
            f"{path} already exists; a key is never overwritten (remove it yourself to replace it)"
        ) from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return public_line(key.public_key(), comment)


def sign_statement(key: Ed25519PrivateKey, signer: str, statement: Mapping[str, Any]) -> Signed:
    """``statement`` signed by ``signer`` with ``key``."""
    body = dict(statement)
    return Signed(
        statement=body,
        signer=signer,
        key=fingerprint(key.public_key()),
        signature=key.sign(_canonical(body)).hex(),
    )


def verify_statement(signed: Signed, people: Mapping[str, str]) -> str | None:
    """``None`` when ``signed`` is signed by the key ``people`` lists for its signer, else the reason it is not."""
    line = people.get(signed.signer)
    if line is None:
        return f"{signed.signer!r} has no public key in the policy (people)"
    key = parse_public_key(line)
    if fingerprint(key) != signed.key:
        return f"the statement was signed with key {signed.key}, not {signed.signer!r}'s key in the policy"
    try:
        key.verify(bytes.fromhex(signed.signature), _canonical(signed.statement))
    except (InvalidSignature, ValueError):
        return f"the signature by {signed.signer!r} does not verify: the statement was altered or forged"
    return None
