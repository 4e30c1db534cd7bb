"""Ed25519 keys: PEM files, with a key id every party can recompute.

keyid = SHA-256 (hex) of the raw 32-byte public key. A private key may be
encrypted; its passphrase comes from $TRAINGUARD_KEY_PASSPHRASE, never a flag
(flags land in shell history and CI logs).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from trainguard.errors import ConfigError

PASSPHRASE_ENV = "TRAINGUARD_KEY_PASSPHRASE"


def keyid(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def generate(out_dir: str | Path, name: str = "trainguard", force: bool = False,
             encrypt: bool = False) -> tuple[Path, Path]:
    """Write NAME.key (mode 0600) and NAME.pub into `out_dir`; refuse to overwrite unless `force`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    priv_path, pub_path = out / f"{name}.key", out / f"{name}.pub"
    for p in (priv_path, pub_path):
        if p.exists() and not force:
            raise ConfigError(f"{p} exists; pass --force to replace it (the old key can no longer sign)")
    key = Ed25519PrivateKey.generate()
    if encrypt:
        phrase = os.environ.get(PASSPHRASE_ENV)
        if not phrase:
            raise ConfigError(f"--encrypt needs the passphrase in ${PASSPHRASE_ENV}")
        enc: serialization.KeySerializationEncryption = serialization.BestAvailableEncryption(phrase.encode())
    else:
        enc = serialization.NoEncryption()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, enc)
    if priv_path.exists():
        priv_path.unlink()
    fd = os.open(priv_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    pub_path.write_bytes(key.public_key().public_bytes(serialization.Encoding.PEM,
                                                       serialization.PublicFormat.SubjectPublicKeyInfo))
    return priv_path, pub_path


def load_private(path: str | Path) -> Ed25519PrivateKey:
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as e:
        raise ConfigError(f"{p}: cannot read private key ({e.strerror})") from None
    phrase = os.environ.get(PASSPHRASE_ENV)
    try:
        key = serialization.load_pem_private_key(data, password=phrase.encode() if phrase else None)
    except TypeError:
        raise ConfigError(f"{p}: key is encrypted; set ${PASSPHRASE_ENV}") from None
    except ValueError as e:
        raise ConfigError(f"{p}: not a readable PEM private key ({e})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{p}: not an Ed25519 private key")
    return key


def load_public(source: str | Path | bytes | Ed25519PublicKey) -> Ed25519PublicKey:
    """A public key from a PEM file path, PEM bytes, raw 32 bytes, or a key object."""
    if isinstance(source, Ed25519PublicKey):
        return source
    if isinstance(source, bytes):
        data, where = source, "<bytes>"
        if len(data) == 32:
            return Ed25519PublicKey.from_public_bytes(data)
    else:
        where = str(source)
        try:
            data = Path(source).read_bytes()
        except OSError as e:
            raise ConfigError(f"{where}: cannot read public key ({e.strerror})") from None
    try:
        key = serialization.load_pem_public_key(data)
    except ValueError:
        try:  # a private key file given by mistake still yields its public half
            key = serialization.load_pem_private_key(data, password=None).public_key()
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: not a readable PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{where}: not an Ed25519 public key")
    return key
