#!/usr/bin/env python3
"""A TLS front for a plain-HTTP service on loopback: terminates TLS with a test
certificate and relays each connection's bytes, unchanged, to the backend.
Stdlib only. Run by ecr-login-world.sh; it lets programs that only speak to
the real AWS endpoint names (https://api.ecr.<region>.amazonaws.com, port 443)
reach moto, with /etc/hosts sending those names to 127.0.0.1.

  tls-forward.py --listen 127.0.0.1:443 --backend 127.0.0.1:PORT \
                 --cert cert.pem --key key.pem --log FILE --pidfile FILE \
                 [--connect NAME[,NAME...]]

Both --listen and --backend must be loopback addresses: it never connects
anywhere else, whatever a client asks.

--connect: be an HTTPS proxy instead (for HTTPS_PROXY=http://LISTEN): each
connection must start with `CONNECT NAME:443 HTTP/1.1` for one of the NAMEs
(the names of the certificate); it gets `200`, and then TLS as above, relayed
to the backend. Any other request gets 403 and is closed. This needs neither
port 443 nor /etc/hosts.

Log: one line per connection, flushed at once:
  conn client=ADDR sni=NAME|- connect=NAME:PORT|- status=relayed|refused|tls-error|backend-error
"""

import argparse
import os
import signal
import socket
import ssl
import sys
import threading


def loopback(hostport):
    host, _, port = hostport.rpartition(":")
    host = host.strip("[]")
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
    except (OSError, ValueError):
        raise SystemExit("tls-forward: cannot resolve %r" % hostport)
    addr = infos[0][4][0]
    if not (addr.startswith("127.") or addr == "::1"):
        raise SystemExit("tls-forward: %s is not a loopback address" % hostport)
    return infos[0][0], (addr, int(port))


def pump(src, dst):
    try:
        while True:
            data = src.recv(65536)
            if not data:
                break
            dst.sendall(data)
    except OSError:
        pass
    finally:
        # the other direction may still be talking: close only ours
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


class Forwarder:
    def __init__(self, a):
        self.family, self.backend = loopback(a.backend)
        fam, self.listen = loopback(a.listen)
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(a.cert, a.key)
        self.ctx.sni_callback = self.on_sni
        self.connect = [n for n in (a.connect or "").split(",") if n]
        self.logf = open(a.log, "a", buffering=1)
        self.lock = threading.Lock()
        self.sock = socket.socket(fam, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(self.listen)
        self.sock.listen(64)
        mode = " connect " + ",".join(self.connect) if self.connect else ""
        self.log("listening %s:%d backend %s:%d%s pid %d" % (
            self.listen[:2] + self.backend[:2] + (mode, os.getpid())))

    def log(self, line):
        with self.lock:
            self.logf.write(line + "\n")

    @staticmethod
    def on_sni(tls, name, _ctx):
        tls.ecr_sni = name

    def proxy_preamble(self, conn):
        """Reads a CONNECT request; returns its target when allowed, else None."""
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = conn.recv(4096)
            if not chunk or len(buf) > 16384:
                return None, "-"
            buf += chunk
        line = buf.split(b"\r\n", 1)[0].decode("latin-1")
        parts = line.split()
        target = parts[1] if len(parts) == 3 else "-"
        host, _, port = target.rpartition(":")
        if parts[:1] != ["CONNECT"] or port != "443" or host not in self.connect:
            conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            return None, target
        conn.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")
        return target, target

    def handle(self, conn, client):
        target, status, sni = "-", "refused", "-"
        tls = plain = None
        try:
            conn.settimeout(30)
            if self.connect:
                allowed, target = self.proxy_preamble(conn)
                if allowed is None:
                    return
            try:
                tls = self.ctx.wrap_socket(conn, server_side=True)
            except (OSError, ssl.SSLError):
                status = "tls-error"
                return
            sni = getattr(tls, "ecr_sni", None) or "-"
            try:
                plain = socket.socket(self.family, socket.SOCK_STREAM)
                plain.settimeout(10)
                plain.connect(self.backend)
            except OSError:
                status = "backend-error"
                return
            tls.settimeout(None)
            plain.settimeout(None)
            status = "relayed"
            up = threading.Thread(target=pump, args=(tls, plain), daemon=True)
            up.start()
            pump(plain, tls)
            up.join()
        except OSError:
            pass
        finally:
            self.log("conn client=%s:%d sni=%s connect=%s status=%s" % (
                client[0], client[1], sni, target, status))
            for s in (plain, tls, conn):
                if s is not None:
                    try:
                        s.close()
                    except OSError:
                        pass

    def serve(self):
        while True:
            conn, client = self.sock.accept()
            threading.Thread(target=self.handle, args=(conn, client), daemon=True).start()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--listen", required=True)
    p.add_argument("--backend", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--pidfile", required=True)
    p.add_argument("--connect")
    a = p.parse_args()
    fwd = Forwarder(a)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    with open(a.pidfile + ".tmp", "w") as f:
        f.write("%d\n" % os.getpid())
    os.rename(a.pidfile + ".tmp", a.pidfile)
    fwd.serve()


if __name__ == "__main__":
    sys.exit(main())
