"""Networking of a container's namespaces.

For now only what the init does in a fresh network namespace: bring up
loopback, as runc does, so 127.0.0.1 works inside. Bridges and veth pairs
(pyroute2, from one owner thread) come with the supervisor.
"""

from __future__ import annotations

import fcntl
import socket
import struct

# <linux/sockios.h>, <net/if.h>
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
_IFREQ = struct.Struct("16sH22x")   # struct ifreq { char ifr_name[16]; short ifr_flags; ... } (40 bytes)


def bring_up_loopback() -> None:
    """Set IFF_UP on ``lo`` in the current network namespace (netdevice(7) ioctls).

    Raises:
        OSError: the ioctl failed (names the interface).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            raw = fcntl.ioctl(s, SIOCGIFFLAGS, _IFREQ.pack(b"lo", 0))
            _, flags = _IFREQ.unpack(raw)
            if not flags & IFF_UP:
                fcntl.ioctl(s, SIOCSIFFLAGS, _IFREQ.pack(b"lo", flags | IFF_UP))
        except OSError as exc:
            raise OSError(exc.errno, f"bring up lo: {exc.strerror}") from exc
