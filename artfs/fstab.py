"""``mount.fuse.artfs``: the helper mount(8) runs for type ``fuse.artfs``, so a training
host mounts the registry at boot from an fstab line

    http://registry:8765  /mnt/artfs  fuse.artfs  _netdev,nofail,cache_size=200G  0 0

or by hand with ``mount -t fuse.artfs http://registry:8765 /mnt/artfs -o xattrs``.

mount(8) calls ``mount.fuse.artfs SOURCE MOUNTPOINT [-sfnv] [-o OPTIONS]``; the options are
translated to ``artfs mount`` flags (``cache_dir=DIR`` -> ``--cache-dir DIR``, ``xattrs`` ->
``--xattrs``), mount(8)'s own ones (``rw``, ``noauto``, ``_netdev``, ``x-systemd.*`` ...) are
dropped, and anything else is refused with one line, before anything is mounted. At boot
there is no environment to carry ``ARTFS_TOKEN``: ``token_file=PATH`` reads it from a file
(mode 0600, owned by root). ``artfs mount`` daemonizes and returns once the kernel shows the
mount, which is what mount(8) expects of a helper.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from .errors import InvalidInput

# Options that take a value, and the ``artfs mount`` flag each becomes.
VALUED = {
    "cache_dir": "--cache-dir",
    "cache_size": "--cache-size",
    "state_dir": "--state-dir",
    "log": "--log",
    "ttl": "--ttl",
    "timeout": "--timeout",
    "dir_readahead": "--dir-readahead",
    "random_fill": "--random-fill",
}
FLAGS = {
    "xattrs": "--xattrs",
    "allow_other": "--allow-other",
    "nonempty": "--nonempty",
    "no_passthrough": "--no-passthrough",
    "debug": "--debug",
}
# mount(8)'s and the kernel's generic options: meaningful to mount(8) or systemd, not to us.
GENERIC = {
    "defaults", "rw", "ro", "auto", "noauto", "user", "users", "nouser", "owner", "group",
    "_netdev", "nofail", "suid", "nosuid", "dev", "nodev", "exec", "noexec", "async", "sync",
    "atime", "noatime", "relatime", "norelatime", "strictatime", "diratime", "nodiratime",
    "lazytime", "nolazytime", "loud", "silent",
}  # fmt: skip
GENERIC_PREFIXES = ("x-", "comment=")


def mount_argv(source: str, mountpoint: str, options: str) -> tuple[list[str], dict[str, str]]:
    """The ``artfs`` arguments and the extra environment for one mount(8) request."""
    argv = ["mount", mountpoint, "--registry", source]
    env: dict[str, str] = {}
    for option in filter(None, options.split(",")):
        name, has_value, value = option.partition("=")
        if option in GENERIC or option.startswith(GENERIC_PREFIXES):
            continue
        if name in VALUED and has_value and value:
            argv += [VALUED[name], value]
        elif name in FLAGS and not has_value:
            argv.append(FLAGS[name])
        elif name == "token_file" and value:
            env["ARTFS_TOKEN"] = _read_token(value)
        else:
            known = ", ".join(sorted([*(f"{k}=" for k in VALUED), *FLAGS, "token_file="]))
            raise InvalidInput(f"unknown option {option!r} for fuse.artfs (known: {known})")
    return argv, env


def _read_token(path: str) -> str:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError as e:
        raise InvalidInput(f"token_file={path}: {e.strerror}") from None


def parse_helper_args(args: Sequence[str]) -> tuple[str, str, str, bool]:
    """(source, mountpoint, options, fake) from ``SOURCE MOUNTPOINT [-sfnv] [-o OPTS] [-t T]``."""
    positional: list[str] = []
    options: list[str] = []
    fake = False
    it = iter(args)
    for arg in it:
        if arg == "-o":
            options.append(next(it, ""))
        elif arg.startswith("-o"):
            options.append(arg[2:])
        elif arg == "-t":
            next(it, None)  # the type: we are its helper
        elif arg.startswith("-") and len(arg) > 1:
            fake = fake or "f" in arg[1:]  # -f: fake (mount(8) checks, mounts nothing)
        else:
            positional.append(arg)
    if len(positional) != 2:
        raise InvalidInput("usage: mount.fuse.artfs REGISTRY MOUNTPOINT [-o OPTIONS]")
    return positional[0], positional[1], ",".join(options), fake


def main(argv: Sequence[str] | None = None) -> int:
    from .cli import error_line
    from .cli import main as artfs_main

    try:
        source, mountpoint, options, fake = parse_helper_args(
            sys.argv[1:] if argv is None else argv
        )
        args, env = mount_argv(source, mountpoint, options)
    except InvalidInput as e:
        print(f"mount.fuse.artfs: {error_line(e)}", file=sys.stderr)
        return 1
    if fake:
        return 0
    os.environ.update(env)
    return artfs_main(args)


if __name__ == "__main__":
    sys.exit(main())
