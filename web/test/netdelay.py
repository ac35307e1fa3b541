#!/usr/bin/env python3
"""Delay with jitter, hence reordering, for the packets of one NFQUEUE queue.

The kernel of the test machines has no netem qdisc, so the faults test sends the UDP datagrams
its peers receive to a netfilter queue (`iptables ... -j NFQUEUE --queue-num N`), and this
program gives each one back after a delay drawn uniformly from [delay - jitter, delay + jitter]
milliseconds: a datagram that drew less overtakes those queued before it. It speaks the
netlink protocol of nfnetlink_queue directly (Python's standard library only), reads packet
metadata only, and runs until stdin closes or it is killed. It prints "ready" once bound.

    netdelay.py QUEUE DELAY_MS JITTER_MS
"""

import heapq
import os
import random
import select
import socket
import struct
import sys
import time

NETLINK_NETFILTER = 12
NFNL_SUBSYS_QUEUE = 3
NFQNL_MSG_PACKET = 0
NFQNL_MSG_VERDICT = 1
NFQNL_MSG_CONFIG = 2
NFQA_PACKET_HDR = 1
NFQA_VERDICT_HDR = 2
NFQA_CFG_CMD = 1
NFQA_CFG_PARAMS = 2
NFQNL_CFG_CMD_BIND = 1
NFQNL_COPY_META = 1
NLM_F_REQUEST = 1
NLMSG_ERROR = 2
NF_ACCEPT = 1


def attribute(kind, payload):
    length = 4 + len(payload)
    return struct.pack("=HH", length, kind) + payload + b"\0" * (-length % 4)


def message(kind, queue, attributes, seq=0):
    body = struct.pack("=BBH", socket.AF_UNSPEC, 0, socket.htons(queue)) + b"".join(attributes)
    header = struct.pack("=IHHII", 16 + len(body), (NFNL_SUBSYS_QUEUE << 8) | kind, NLM_F_REQUEST, seq, 0)
    return header + body


def attributes(data):
    """The attributes after the netfilter header, by type."""
    found = {}
    offset = 0
    while offset + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, offset)
        if length < 4:
            break
        found[kind & 0x7FFF] = data[offset + 4 : offset + length]
        offset += (length + 3) & ~3
    return found


def main():
    queue, delay, jitter = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    sock.bind((0, 0))
    sock.send(message(NFQNL_MSG_CONFIG, queue, [attribute(NFQA_CFG_CMD, struct.pack("!BxH", NFQNL_CFG_CMD_BIND, 0))]))
    sock.send(message(NFQNL_MSG_CONFIG, queue, [attribute(NFQA_CFG_PARAMS, struct.pack("!IB", 0, NFQNL_COPY_META))]))
    print("ready", flush=True)
    due = []  # (time, packet id)
    watched = [sock, sys.stdin]
    while True:
        now = time.monotonic()
        while due and due[0][0] <= now:
            _, packet = heapq.heappop(due)
            verdict = attribute(NFQA_VERDICT_HDR, struct.pack("!II", NF_ACCEPT, packet))
            sock.send(message(NFQNL_MSG_VERDICT, queue, [verdict]))
        timeout = max(0.0, due[0][0] - now) if due else None
        readable, _, _ = select.select(watched, [], [], timeout)
        if sys.stdin in readable and not os.read(sys.stdin.fileno(), 4096):
            return
        if sock not in readable:
            continue
        data = sock.recv(1 << 16)
        offset = 0
        while offset + 16 <= len(data):
            length, kind = struct.unpack_from("=IH", data, offset)
            if length < 16:
                break
            if kind == NLMSG_ERROR:
                (error,) = struct.unpack_from("=i", data, offset + 16)
                if error:
                    sys.exit(f"netlink error {error}")
            elif kind == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET:
                header = attributes(data[offset + 20 : offset + length]).get(NFQA_PACKET_HDR)
                if header:
                    (packet,) = struct.unpack_from("!I", header)
                    wait = max(0.0, delay + random.uniform(-jitter, jitter)) / 1000
                    heapq.heappush(due, (time.monotonic() + wait, packet))
            offset += (length + 3) & ~3


if __name__ == "__main__":
    main()
