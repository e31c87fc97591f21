"""``restic init`` for the tests: the real one, then the new repository's key files re-encrypted
with cheap scrypt parameters (tests/harness/restic_bin/restic runs this for ``init``).

restic keeps the repository's master key in ``keys/<id>``, encrypted with a key that scrypt
derives from the password with the parameters N, r and p written next to it; every restic command
derives it again. ``restic init`` calibrates them to about half a second of CPU, and the suite
runs some 500 restic commands. The master key, the repository and everything in it stay as
restic made them: only the envelope of the master key is re-sealed, with N=2**10, r=1, p=1, in
restic's format (AES-256-CTR, then Poly1305-AES over the ciphertext; restic's doc/design.rst,
"Keys, Encryption and MAC"). Only a local repository whose password is in the environment is
rewritten; any other is left as restic made it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.poly1305 import Poly1305

REAL_RESTIC = "/usr/bin/restic"
CHEAP = {"N": 2 ** 10, "r": 1, "p": 1}


def _user_keys(password: bytes, salt: bytes, n: int, r: int, p: int) -> tuple[bytes, bytes, bytes]:
    """(AES key, Poly1305 k, Poly1305 r): restic's crypto.KDF, 64 bytes of scrypt in that order."""
    derived = hashlib.scrypt(password, salt=salt, n=n, r=r, p=p, dklen=64, maxmem=2 ** 31 - 1)
    return derived[:32], derived[32:48], derived[48:]


def _mac(ciphertext: bytes, nonce: bytes, k: bytes, r: bytes) -> bytes:
    encryptor = Cipher(algorithms.AES(k), modes.ECB()).encryptor()
    return Poly1305.generate_tag(r + encryptor.update(nonce) + encryptor.finalize(), ciphertext)


def open_sealed(data: bytes, keys: tuple[bytes, bytes, bytes]) -> bytes:
    aes, k, r = keys
    nonce, ciphertext, tag = data[:16], data[16:-16], data[-16:]
    if _mac(ciphertext, nonce, k, r) != tag:
        raise ValueError("wrong password: the key file's MAC does not match")
    decryptor = Cipher(algorithms.AES(aes), modes.CTR(nonce)).decryptor()
    return decryptor.update(ciphertext) + decryptor.finalize()


def seal(plaintext: bytes, keys: tuple[bytes, bytes, bytes]) -> bytes:
    aes, k, r = keys
    nonce = os.urandom(16)
    encryptor = Cipher(algorithms.AES(aes), modes.CTR(nonce)).encryptor()
    ciphertext = encryptor.update(plaintext) + encryptor.finalize()
    return nonce + ciphertext + _mac(ciphertext, nonce, k, r)


def cheapen_keys(repository: Path, password: bytes) -> int:
    """Re-seal every key file of ``repository`` with CHEAP parameters; how many were rewritten."""
    rewritten = 0
    for path in sorted((repository / "keys").iterdir()):
        key = json.loads(path.read_text())
        salt = base64.b64decode(key["salt"])
        master = open_sealed(base64.b64decode(key["data"]), _user_keys(password, salt, key["N"], key["r"], key["p"]))
        key.update(CHEAP, data=base64.b64encode(seal(master, _user_keys(password, salt, CHEAP["N"], CHEAP["r"], CHEAP["p"]))).decode())
        partial = path.with_name(path.name + ".partial")
        partial.write_text(json.dumps(key))
        partial.chmod(path.stat().st_mode & 0o777)
        os.replace(partial, path)
        rewritten += 1
    return rewritten


def _repository(args: list[str]) -> str:
    for index, arg in enumerate(args):
        if arg in ("-r", "--repo") and index + 1 < len(args):
            return args[index + 1]
        if arg.startswith("--repo="):
            return arg.partition("=")[2]
    return os.environ.get("RESTIC_REPOSITORY", "")


def _password(args: list[str]) -> bytes | None:
    if "RESTIC_PASSWORD" in os.environ:
        return os.environ["RESTIC_PASSWORD"].encode()
    password_file = os.environ.get("RESTIC_PASSWORD_FILE")
    for index, arg in enumerate(args):
        if arg in ("-p", "--password-file") and index + 1 < len(args):
            password_file = args[index + 1]
    if password_file:
        return Path(password_file).read_text().strip().encode()   # (restic trims it the same way)
    return None


def main(args: list[str]) -> int:
    status = subprocess.call([REAL_RESTIC, *args])
    repository, password = _repository(args), _password(args)
    if repository.startswith("local:"):
        repository = repository[len("local:"):]
    if status == 0 and password is not None and repository and Path(repository, "keys").is_dir():
        cheapen_keys(Path(repository), password)
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
