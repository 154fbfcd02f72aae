"""An fscrypt v2-policy directory (an encrypted profile), through the kernel's ioctls (linux/fscrypt.h).

Pure Python: fcntl.ioctl on packed structs, no fscrypt tool. Every profile directory of a user shares one master
key, derived from the user's unlock key with the purpose label `fscrypt:v2`; the kernel names it by its key
identifier (HKDF-SHA512 of the key), which the directory's policy records. So unlocking a directory means: derive
the key, check that its identifier is the one in the directory's policy, and add it to the filesystem.
"""

from __future__ import annotations

import enum
import errno
import fcntl
import hmac
import os
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ..errors import TargetError

PURPOSE = "fscrypt:v2"
MASTER_KEY_SIZE = 64  # AES-256-XTS contents need a 64-byte master key under a v2 policy
IDENTIFIER_SIZE = 16

POLICY_V2 = 2
MODE_AES_256_XTS = 1
MODE_AES_256_CTS = 4
FLAGS_PAD_32 = 0x03
KEY_SPEC_TYPE_IDENTIFIER = 2

REMOVAL_STATUS_FLAG_FILES_BUSY = 0x1
REMOVAL_STATUS_FLAG_OTHER_USERS = 0x2


def _iowr(nr: int, size: int, direction: int = 3) -> int:
    # _IOC(dir, 'f', nr, size) as in asm-generic/ioctl.h
    return (direction << 30) | (size << 16) | (ord("f") << 8) | nr


# struct fscrypt_policy_v2: version, contents mode, filenames mode, flags, log2_data_unit_size, 3 reserved, identifier
_POLICY_V2 = struct.Struct("=BBBBB3x16s")
# struct fscrypt_key_specifier: u32 type, u32 reserved, 32-byte union (identifier in its first 16 bytes)
_KEY_SPEC = struct.Struct("=II32s")
# struct fscrypt_add_key_arg: key_spec, u32 raw_size, u32 key_id, u32 reserved[8], then raw[]
_ADD_KEY = struct.Struct(f"={_KEY_SPEC.size}sII32x")
# struct fscrypt_remove_key_arg: key_spec, u32 removal_status_flags, u32 reserved[5]
_REMOVE_KEY = struct.Struct(f"={_KEY_SPEC.size}sI20x")
# struct fscrypt_get_key_status_arg: key_spec, u32 reserved[6], u32 status, status_flags, user_count, reserved[13]
_KEY_STATUS = struct.Struct(f"={_KEY_SPEC.size}s24xIII52x")
# struct fscrypt_get_policy_ex_arg: u64 policy_size, then the policy union (the largest member is v2's 24 bytes)
_POLICY_EX = struct.Struct("=Q24s")

FS_IOC_SET_ENCRYPTION_POLICY = _iowr(19, 12, direction=2)  # _IOR with the v1 struct's size; takes v2 as well
FS_IOC_GET_ENCRYPTION_POLICY_EX = _iowr(22, 9)  # declared with __u8[9]
FS_IOC_ADD_ENCRYPTION_KEY = _iowr(23, _ADD_KEY.size)
FS_IOC_REMOVE_ENCRYPTION_KEY = _iowr(24, _REMOVE_KEY.size)
FS_IOC_REMOVE_ENCRYPTION_KEY_ALL_USERS = _iowr(25, _REMOVE_KEY.size)
FS_IOC_GET_ENCRYPTION_KEY_STATUS = _iowr(26, _KEY_STATUS.size)


class Status(enum.Enum):
    NOT_ENCRYPTED = "not encrypted"
    LOCKED = "locked"
    UNLOCKED = "unlocked"
    PARTIALLY_LOCKED = "partially locked"  # key removed, but files still open kept some of it in use


@dataclass(frozen=True)
class Policy:
    """A v2 encryption policy."""

    identifier: bytes
    contents_mode: int = MODE_AES_256_XTS
    filenames_mode: int = MODE_AES_256_CTS
    flags: int = FLAGS_PAD_32

    def pack(self) -> bytes:
        return _POLICY_V2.pack(POLICY_V2, self.contents_mode, self.filenames_mode, self.flags, 0, self.identifier)


NO_FS_ENCRYPTION = (
    "the filesystem has encryption turned off; for ext4: tune2fs -O encrypt DEVICE (or mkfs.ext4 -O encrypt)"
)


# --- keys -----------------------------------------------------------------------------------------------------


def profile_key(unlock_key: bytes) -> bytes:
    """The user's fscrypt master key: one per user, shared by all their profile directories."""
    from ..keys import derive

    key = derive(unlock_key, PURPOSE, MASTER_KEY_SIZE)
    if len(key) != MASTER_KEY_SIZE:
        raise TargetError(f"internal: the fscrypt key must be {MASTER_KEY_SIZE} bytes")
    return key


def key_identifier(master_key: bytes) -> bytes:
    """What the kernel computes for a v2 master key (fs/crypto/keyring.c): HKDF-SHA512, info 'fscrypt\\0' + 1."""
    return HKDF(hashes.SHA512(), IDENTIFIER_SIZE, salt=None, info=b"fscrypt\0\x01").derive(master_key)


def _key_spec(identifier: bytes) -> bytes:
    return _KEY_SPEC.pack(KEY_SPEC_TYPE_IDENTIFIER, 0, identifier)


# --- ioctls ---------------------------------------------------------------------------------------------------


class _Dir:
    """An open directory to aim ioctls at (O_RDONLY works for every fscrypt ioctl here)."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            self.fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | os.O_NOFOLLOW)
        except FileNotFoundError:
            raise TargetError(f"{path} does not exist.") from None
        except NotADirectoryError:
            if os.path.islink(path):  # O_NOFOLLOW with O_DIRECTORY reports a symlink as ENOTDIR
                raise TargetError(f"{path} is a symbolic link; name the directory itself.") from None
            raise TargetError(f"{path} is not a directory.") from None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise TargetError(f"{path} is a symbolic link; name the directory itself.") from None
            raise TargetError(f"Cannot open {path}: {exc.strerror}.") from None

    def __enter__(self) -> _Dir:
        return self

    def __exit__(self, *exc: object) -> None:
        os.close(self.fd)

    def ioctl(self, request: int, arg: bytes | bytearray, what: str) -> bytearray:
        """The ioctl on a mutable buffer, returned with the kernel's answer in it (a bytearray is used as is, not
        copied, so a caller can wipe the one copy of a key it passed)."""
        buf = arg if isinstance(arg, bytearray) else bytearray(arg)
        try:
            fcntl.ioctl(self.fd, request, buf, True)
        except OSError as exc:
            raise _ioctl_error(self.path, what, exc) from None
        return buf


def _ioctl_error(path: str, what: str, exc: OSError) -> TargetError:
    reasons = {
        errno.EOPNOTSUPP: NO_FS_ENCRYPTION,
        errno.ENOTTY: "this filesystem does not support fscrypt at all (use ext4, f2fs or ubifs)",
        errno.ENOTEMPTY: "the directory is not empty; fscrypt can only encrypt an empty directory",
        errno.EEXIST: "the directory is already encrypted under another policy",
        errno.ENOKEY: "the key is not in the filesystem",
        errno.EACCES: "permission denied",
        errno.EPERM: "permission denied (the directory's owner or root must do this)",
        errno.EINVAL: "the kernel refused the request as invalid",
    }
    reason = reasons.get(exc.errno or 0, exc.strerror or f"errno {exc.errno}")
    return TargetError(f"Cannot {what} {path}: {reason}.")


def get_policy(path: str) -> Policy | None:
    """The directory's v2 policy; None if it is not encrypted. A v1 policy is refused as not ours."""
    with _Dir(path) as d:
        return _get_policy(d)


def _get_policy(d: _Dir, unsupported_is_none: bool = False) -> Policy | None:
    buf = bytearray(_POLICY_EX.pack(_POLICY_EX.size - 8, b""))  # policy_size in: the room we give
    try:
        fcntl.ioctl(d.fd, FS_IOC_GET_ENCRYPTION_POLICY_EX, buf, True)
    except OSError as exc:
        if exc.errno == errno.ENODATA:
            return None
        if unsupported_is_none and exc.errno in (errno.EOPNOTSUPP, errno.ENOTTY):
            return None  # a filesystem without encryption holds no encrypted directory
        raise _ioctl_error(d.path, "read the encryption policy of", exc) from None
    _, raw = _POLICY_EX.unpack(bytes(buf))
    if raw[0] != POLICY_V2:
        raise TargetError(f"{d.path} is encrypted under a v{raw[0]} fscrypt policy; hmacunlock uses v2 only.")
    _, contents, filenames, flags, _, identifier = _POLICY_V2.unpack(raw)
    return Policy(identifier=identifier, contents_mode=contents, filenames_mode=filenames, flags=flags)


def _add_key(d: _Dir, master_key: bytes) -> bytes:
    """FS_IOC_ADD_ENCRYPTION_KEY; returns the identifier the kernel computed."""
    buf = bytearray(_ADD_KEY.size + len(master_key))  # built in place: the one copy of the key we can wipe
    _ADD_KEY.pack_into(buf, 0, _key_spec(bytes(IDENTIFIER_SIZE)), len(master_key), 0)
    buf[_ADD_KEY.size :] = master_key
    try:
        d.ioctl(FS_IOC_ADD_ENCRYPTION_KEY, buf, "add the key to the filesystem of")
        _, _, identifier = _KEY_SPEC.unpack_from(buf, 0)
    finally:
        buf[_ADD_KEY.size :] = bytes(len(master_key))  # wipe our copy of the key
    return bytes(identifier[:IDENTIFIER_SIZE])


def _key_status(d: _Dir, identifier: bytes) -> int:
    out = d.ioctl(
        FS_IOC_GET_ENCRYPTION_KEY_STATUS, _KEY_STATUS.pack(_key_spec(identifier), 0, 0, 0), "read the key status of"
    )
    _, status, _, _ = _KEY_STATUS.unpack(out)
    return int(status)


def _mount_point(path: str) -> str:
    """The root of the filesystem holding `path`: where key ioctls are aimed, as the fscrypt tool does."""
    path = os.path.realpath(path)
    dev = os.stat(path).st_dev
    while path != "/":
        parent = os.path.dirname(path)
        if os.stat(parent).st_dev != dev:
            break
        path = parent
    return path


# --- the operations -------------------------------------------------------------------------------------------


def _check_can_set_up(d: _Dir) -> None:
    # Reading the policy also fails first, and clearly, on a filesystem without encryption.
    if _get_policy(d) is not None:
        raise TargetError(f"Cannot set up {d.path}: the directory is already encrypted under another policy.")
    with os.scandir(d.fd) as entries:
        empty = not any(entries)
    if not empty:
        raise TargetError(
            f"Cannot set up {d.path}: the directory is not empty; fscrypt can only encrypt an empty directory."
        )


def check_can_set_up(directory: str) -> None:
    """Refuse, before anything is asked of the person, a directory `setup_profile` would refuse."""
    with _Dir(directory) as d:
        _check_can_set_up(d)


def require_policy(directory: str) -> Policy:
    """The directory's policy; TargetError when it is not encrypted."""
    with _Dir(directory) as d:
        return _require_policy(d)


def _require_policy(d: _Dir) -> Policy:
    policy = _get_policy(d)
    if policy is None:
        raise TargetError(f"{d.path} is not encrypted: set it up with 'hmacunlock profile setup'.")
    return policy


def setup_profile(directory: str, unlock_key: bytes) -> Policy:
    """Make the empty `directory` an fscrypt v2 directory under the user's key, and leave it unlocked."""
    master_key = profile_key(unlock_key)
    with _Dir(directory) as d:
        _check_can_set_up(d)
        identifier = _add_key(d, master_key)  # a v2 policy may only be set by someone holding its key
        if identifier != key_identifier(master_key):
            raise TargetError(f"internal: the kernel's key identifier for {directory} differs from ours")
        policy = Policy(identifier=identifier)
        d.ioctl(FS_IOC_SET_ENCRYPTION_POLICY, policy.pack(), "set the encryption policy of")
        return policy


@dataclass(frozen=True)
class Unlocked:
    """Where unlock_profile added a key: enough to remove it again with no key at hand (lock_key)."""

    directory: str
    mount: str  # the root of the filesystem the key was added to
    dev: int  # that filesystem's st_dev, so a later lock never aims at another filesystem mounted there since
    identifier: bytes


def unlock_profile(directory: str, unlock_key: bytes) -> Unlocked:
    """Add the user's key when `directory`'s policy is under it; TargetError otherwise (PAM helper's entry)."""
    master_key = profile_key(unlock_key)
    identifier = key_identifier(master_key)
    with _Dir(directory) as d:
        policy = _require_policy(d)
        if not hmac.compare_digest(policy.identifier, identifier):
            raise TargetError(f"{directory} is encrypted under another key than this user's.")
        if _add_key(d, master_key) != identifier:
            raise TargetError(f"internal: the kernel's key identifier for {directory} differs from ours")
        dev = os.fstat(d.fd).st_dev
    mount = _mount_point(directory)
    return Unlocked(directory, mount, dev, identifier)


def lock_profile(directory: str) -> Status:
    """Remove the directory's key from the filesystem (every user's claim on it when run as root)."""
    policy = require_policy(directory)
    # Aimed at the mount point: an open descriptor on the directory itself would keep its inode, and so the key,
    # in use, and the removal would stay incomplete.
    with _Dir(_mount_point(directory)) as root:
        return _remove_key(root, policy.identifier, directory)


def lock_key(unlocked: Unlocked) -> Status:
    """Remove the key unlock_profile added, by its identifier, from the filesystem it was added to: no key and no
    policy read needed, and nothing another user's path could redirect (PAM's lock_on_logout). A filesystem no
    longer mounted there took its keys with it (LOCKED); a key no longer there is LOCKED too."""
    try:
        root = _Dir(unlocked.mount)
    except TargetError:
        return Status.LOCKED
    with root:
        if os.fstat(root.fd).st_dev != unlocked.dev:
            return Status.LOCKED  # unmounted (its keys went with it); another filesystem is there now
        return _remove_key(root, unlocked.identifier, unlocked.directory, missing_ok=True)


def _remove_key(root: _Dir, identifier: bytes, directory: str, missing_ok: bool = False) -> Status:
    """FS_IOC_REMOVE_ENCRYPTION_KEY(_ALL_USERS as root) aimed at the filesystem's root; `missing_ok`: a key that is
    not there (ENOKEY: locked already) is LOCKED rather than an error."""
    request = FS_IOC_REMOVE_ENCRYPTION_KEY_ALL_USERS if os.geteuid() == 0 else FS_IOC_REMOVE_ENCRYPTION_KEY
    buf = bytearray(_REMOVE_KEY.pack(_key_spec(identifier), 0))
    try:
        fcntl.ioctl(root.fd, request, buf, True)
    except OSError as exc:
        if missing_ok and exc.errno == errno.ENOKEY:
            return Status.LOCKED
        raise _ioctl_error(directory, "lock", exc) from None
    _, flags = _REMOVE_KEY.unpack(bytes(buf))
    if flags & REMOVAL_STATUS_FLAG_FILES_BUSY:
        return Status.PARTIALLY_LOCKED
    if flags & REMOVAL_STATUS_FLAG_OTHER_USERS:
        return Status.UNLOCKED  # only our claim went: another user added the key too
    return Status.LOCKED


# FSCRYPT_KEY_STATUS_*
_STATUSES = {1: Status.LOCKED, 2: Status.UNLOCKED, 3: Status.PARTIALLY_LOCKED}


def profile_status(directory: str) -> Status:
    with _Dir(directory) as d:
        policy = _get_policy(d, unsupported_is_none=True)
        if policy is None:
            return Status.NOT_ENCRYPTED
        code = _key_status(d, policy.identifier)
    try:
        return _STATUSES[code]
    except KeyError:
        raise TargetError(f"{directory}: the kernel reported an unknown key status {code}.") from None
