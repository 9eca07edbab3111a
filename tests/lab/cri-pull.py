#!/usr/bin/env python3
"""Pulls an image through containerd's CRI: the kubelet's (and crictl's) own call,
runtime.v1.ImageService/PullImage, over gRPC on containerd's socket.

Usage: cri-pull.py IMAGE [SOCKET]   (default /run/containerd/containerd.sock)
Prints the image's id (sha256:...) and exits 0 when containerd pulled it; exits 1 when the
pull failed (containerd's log says why: journalctl -u containerd).

Test-only (tests/lab_registries.rs), for lab hosts with python3 but no crictl: Debian
packages no cri-tools. gRPC over HTTP/2 by hand, from the standard library only: the
request's headers are HPACK literals (no Huffman, no table), and the answer is read from
its DATA frame (the PullImageResponse), so the server's HPACK never needs decoding.
"""
import socket
import struct
import sys


def frame(kind, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def literal(name, value):
    """An HPACK literal header field without indexing, new name, no Huffman (RFC 7541 6.2.2)."""
    out = b"\x00"
    for s in (name.encode(), value.encode()):
        assert len(s) < 127
        out += bytes([len(s)]) + s
    return out


def field(number, payload):
    """A length-delimited protobuf field."""
    n, size = len(payload), b""
    while True:
        byte = n & 0x7F
        n >>= 7
        size += bytes([byte | (0x80 if n else 0)])
        if not n:
            return bytes([number << 3 | 2]) + size + payload


def read_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError("containerd closed the connection")
        data += chunk
    return data


def main():
    image = sys.argv[1]
    path = sys.argv[2] if len(sys.argv) > 2 else "/run/containerd/containerd.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(120)
    sock.connect(path)
    # PullImageRequest{image: ImageSpec{image: IMAGE}}, in a gRPC message frame.
    message = field(1, field(1, image.encode()))
    body = b"\x00" + struct.pack(">I", len(message)) + message
    headers = b"".join(
        literal(k, v)
        for k, v in [
            (":method", "POST"),
            (":scheme", "http"),
            (":path", "/runtime.v1.ImageService/PullImage"),
            (":authority", "localhost"),
            ("content-type", "application/grpc"),
            ("te", "trailers"),
            ("grpc-timeout", "100S"),
        ]
    )
    sock.sendall(
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
        + frame(0x4, 0, 0, b"")  # SETTINGS
        + frame(0x1, 0x4, 1, headers)  # HEADERS, END_HEADERS
        + frame(0x0, 0x1, 1, body)  # DATA, END_STREAM
    )
    data = b""
    while True:
        head = read_exact(sock, 9)
        length = int.from_bytes(head[:3], "big")
        kind, flags = head[3], head[4]
        stream = int.from_bytes(head[5:9], "big") & 0x7FFFFFFF
        payload = read_exact(sock, length)
        if kind == 0x4 and not flags & 0x1:  # SETTINGS: acknowledge
            sock.sendall(frame(0x4, 0x1, 0, b""))
        elif kind == 0x6 and not flags & 0x1:  # PING: answer
            sock.sendall(frame(0x6, 0x1, 0, payload))
        elif kind == 0x7:  # GOAWAY
            break
        elif stream == 1 and kind == 0x0:
            data += payload
        if stream == 1 and kind in (0x0, 0x1) and flags & 0x1:  # END_STREAM
            break
        if stream == 1 and kind == 0x3:  # RST_STREAM
            break
    # PullImageResponse{image_ref: 1}: present only when the pull succeeded.
    if len(data) > 5 and data[5] == 0x0A:
        ref = data[7 : 7 + data[6]].decode()
        print(ref)
        return 0
    print(f"cri-pull: containerd did not pull {image} (journalctl -u containerd says why)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
