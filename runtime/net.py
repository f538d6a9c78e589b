"""Networking of a container's namespaces.

What the init does in a fresh network namespace (bring up loopback, as runc
does, so 127.0.0.1 works inside), and reading the namespace's per-interface
counters over rtnetlink for the metrics (pyroute2 parses the messages; it is
imported on first use only, so the spawn path never pays for it). Bridges and
veth pairs come with the networking work.
"""

from __future__ import annotations

import fcntl
import os
import socket
import struct
import threading
from dataclasses import dataclass

from . import _syscalls

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


# --- per-interface counters of a container's network namespace -------------------------

@dataclass(frozen=True)
class LinkStats:
    """One interface's counters (the kernel's rtnl_link_stats64 figures cAdvisor exports)."""

    rx_bytes: int
    rx_packets: int
    rx_errors: int
    rx_dropped: int
    tx_bytes: int
    tx_packets: int
    tx_errors: int
    tx_dropped: int


# Interfaces whose traffic is not the container's network cost: cAdvisor skips
# loopback too (its isIgnoredDevice), so dashboards see the same interfaces.
IGNORED_INTERFACES = frozenset({"lo"})
_IFLA_STATS_LINK_64 = 1 << 0   # RTM_GETSTATS filter_mask bit: rtnl_link_stats64 only


class NetnsCounters:
    """Interface counters of one network namespace, read over a netlink socket bound inside it.

    ``open`` takes a reference on the namespace (its nsfs file); the netlink
    socket is made inside the namespace on the first ``read``, by switching the
    *calling thread* there and back (setns(2) on CLONE_NEWNET moves one
    thread), and then kept: a socket stays bound to the namespace it was
    created in, so later reads never switch again. Each read is one
    RTM_GETSTATS dump with only the 64-bit link counters (about a tenth of
    an RTM_GETLINK dump's size and parse time); names come from one
    RTM_GETLINK dump, repeated only when an interface index is new.

    ``read`` and ``close`` may be called from different threads (a scrape
    thread and the event loop): a lock keeps ``close`` from pulling the socket
    out from under a read, and a closed instance reads as no interfaces.
    """

    def __init__(self, ns_fd: int) -> None:
        self._ns_fd = ns_fd
        self._sock: socket.socket | None = None
        self._names: dict[int, str] = {}
        self._seq = 0
        self._lock = threading.Lock()
        self._closed = False

    @classmethod
    def open(cls, pid: int) -> "NetnsCounters | None":
        """The network namespace of process ``pid``; None when it is our own (a
        container on the host's network has no network cost of its own).

        Raises:
            OSError: the process is gone or its namespace cannot be opened.
        """
        path = f"/proc/{pid}/ns/net"
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            theirs, ours = os.fstat(fd), os.stat("/proc/self/ns/net")
        except OSError:
            os.close(fd)
            raise
        if (theirs.st_dev, theirs.st_ino) == (ours.st_dev, ours.st_ino):
            os.close(fd)
            return None
        return cls(fd)

    def read(self) -> dict[str, LinkStats]:
        """Counters by interface name, loopback left out.

        Raises:
            OSError: the netlink dump failed (names the request).
        """
        with self._lock:
            if self._closed:
                return {}
            if self._sock is None:
                self._sock = _socket_in_netns(self._ns_fd)
            stats = self._dump_stats()
            if not stats.keys() <= self._names.keys():
                self._names = self._dump_names()
            return {self._names[i]: s for i, s in stats.items()
                    if i in self._names and self._names[i] not in IGNORED_INTERFACES}

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            if self._sock is not None:
                self._sock.close()
            os.close(self._ns_fd)

    def _dump(self, msg, request: str) -> list:
        from pyroute2.netlink import NLM_F_DUMP, NLM_F_REQUEST, NLMSG_DONE, NLMSG_ERROR

        self._seq += 1
        msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_DUMP
        msg["header"]["sequence_number"] = self._seq
        msg.encode()
        assert self._sock is not None
        try:
            self._sock.send(msg.data)
            replies = []
            while True:
                for reply in _marshal().parse(self._sock.recv(1 << 16)):
                    kind = reply["header"]["type"]
                    if reply["header"]["sequence_number"] != self._seq:
                        continue   # the tail of an earlier, interrupted dump
                    if kind == NLMSG_DONE:
                        return replies
                    if kind == NLMSG_ERROR:
                        code = -reply["error"]
                        raise OSError(code, f"netlink {request}: {os.strerror(code)}")
                    replies.append(reply)
        except OSError as exc:
            if exc.strerror and exc.strerror.startswith("netlink "):
                raise
            raise OSError(exc.errno, f"netlink {request}: {exc.strerror}") from exc

    def _dump_stats(self) -> dict[int, LinkStats]:
        from pyroute2.netlink.rtnl import RTM_GETSTATS
        from pyroute2.netlink.rtnl.ifstatsmsg import ifstatsmsg

        msg = ifstatsmsg()
        msg["header"]["type"] = RTM_GETSTATS
        msg["family"] = socket.AF_UNSPEC
        msg["filter_mask"] = _IFLA_STATS_LINK_64
        out = {}
        for reply in self._dump(msg, "RTM_GETSTATS"):
            s = reply.get_attr("IFLA_STATS_LINK_64")
            if s is not None:
                out[reply["ifindex"]] = LinkStats(
                    rx_bytes=s["rx_bytes"], rx_packets=s["rx_packets"], rx_errors=s["rx_errors"],
                    rx_dropped=s["rx_dropped"], tx_bytes=s["tx_bytes"], tx_packets=s["tx_packets"],
                    tx_errors=s["tx_errors"], tx_dropped=s["tx_dropped"])
        return out

    def _dump_names(self) -> dict[int, str]:
        from pyroute2.netlink.rtnl import RTM_GETLINK
        from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg

        msg = ifinfmsg()
        msg["header"]["type"] = RTM_GETLINK
        msg["family"] = socket.AF_UNSPEC
        return {reply["index"]: reply.get_attr("IFLA_IFNAME") for reply in self._dump(msg, "RTM_GETLINK")}


_MARSHAL = None


def _marshal():
    """pyroute2's rtnetlink parser for the two replies we ask for (made once, on first use:
    importing pyroute2 costs start-up time the spawn path must not pay)."""
    global _MARSHAL
    if _MARSHAL is None:
        from pyroute2.netlink.nlsocket import Marshal
        from pyroute2.netlink.rtnl import RTM_NEWLINK, RTM_NEWSTATS
        from pyroute2.netlink.rtnl.ifinfmsg import ifinfmsg
        from pyroute2.netlink.rtnl.ifstatsmsg import ifstatsmsg

        marshal = Marshal()
        marshal.msg_map = {RTM_NEWSTATS: ifstatsmsg, RTM_NEWLINK: ifinfmsg}
        _MARSHAL = marshal
    return _MARSHAL


def _socket_in_netns(ns_fd: int) -> socket.socket:
    """A NETLINK_ROUTE socket created inside the namespace ``ns_fd``; the calling thread
    is back in its own namespace when this returns, whatever happened."""
    own = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        _syscalls.setns(ns_fd, _syscalls.CLONE_NEWNET, path="container network namespace")
        try:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, socket.NETLINK_ROUTE)
        finally:
            _syscalls.setns(own, _syscalls.CLONE_NEWNET, path="/proc/thread-self/ns/net")
    finally:
        os.close(own)
    sock.bind((0, 0))
    return sock
