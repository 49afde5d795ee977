#!/usr/bin/env python3
"""A stand-in for the EC2 instance metadata service (IMDS) and the container
credential endpoints (ECS task role, EKS Pod Identity), serving planted test
credentials. Stdlib only. Run by imds-host.sh inside its own network namespace;
it listens on every address of that namespace (dual-stack when IPv6 is there).

  ECR_IMDS_SECRET=S imds-server.py --role R --log FILE --pidfile FILE
                 [--port 80] [--v2-only]

(the secret comes from the environment, to keep it off the command line)

Paths, on every address:
  PUT /latest/api/token        needs X-aws-ec2-metadata-token-ttl-seconds
                               (1..21600), else 400; 200 with a token
  GET /latest/meta-data/...    IMDSv1 and v2: a token is optional (with
                               --v2-only: required, else 401); an unknown
                               token is a 401, as on EC2
      .../iam/security-credentials/        the role name
      .../iam/security-credentials/<role>  the credentials JSON (Code,
                                           AccessKeyId ASIAPLANTEDIMDSKEY, ...)
  GET /latest/dynamic/instance-identity/document
  GET /v2/credentials/<anything>  ECS task role JSON (ASIAPLANTEDECSKEY)
  GET /v1/credentials             EKS Pod Identity JSON (ASIAPLANTEDEKSKEY)
  GET /ecr-imds-probe             "ok" (what imds-host.sh start/status send)
The secret access key is the planted secret in all three kinds of answer.

Log: one line per request, flushed at once, for tests to count:
  request client=ADDR server=ADDR method=M path=P status=N token=yes|no authorization=yes|no
"""

import argparse
import datetime
import json
import os
import secrets
import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ACCOUNT = "123456789012"
REGION = "eu-west-1"
ZONE = REGION + "a"
INSTANCE_ID = "i-0planted0imds0host"
SESSION_TOKEN = "PLANTED-IMDS-SESSION-TOKEN"


def iso(t):
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def unmap(addr):
    # a dual-stack socket shows IPv4 peers as ::ffff:a.b.c.d
    return addr[7:] if addr.startswith("::ffff:") else addr


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as SDKs expect

    def version_string(self):
        return "EC2ws"

    def log_message(self, fmt, *args):  # replaced by our own request line
        pass

    def log_request(self, code="-", size="-"):
        pass

    def send(self, status, body, ctype="text/plain", headers=()):
        data = body.encode() if isinstance(body, str) else body
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(data)))
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.server.note(self, status)

    def creds(self, key_id):
        now = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)
        return now, {
            "AccessKeyId": key_id,
            "SecretAccessKey": self.server.secret,
            "Token": SESSION_TOKEN,
            "Expiration": iso(now + datetime.timedelta(hours=6)),
        }

    def do_PUT(self):
        path = self.path.split("?", 1)[0]
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        if path != "/latest/api/token":
            return self.send(404, "Not Found")
        if self.headers.get("X-Forwarded-For"):
            return self.send(403, "Forbidden")
        ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds", "")
        if not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
            return self.send(400, "Missing or invalid parameters")
        token = "PLANTED-IMDSV2-TOKEN-" + secrets.token_hex(16)
        with self.server.lock:
            self.server.tokens.add(token)
        self.send(200, token, headers=[("X-aws-ec2-metadata-token-ttl-seconds", ttl)])

    def do_HEAD(self):
        self.do_GET()

    def do_POST(self):
        self.send(405, "Method Not Allowed")

    do_DELETE = do_PATCH = do_POST

    def do_GET(self):
        path = self.path.split("?", 1)[0]
        role = self.server.role
        if path == "/ecr-imds-probe":
            return self.send(200, "ok")
        if path.startswith("/v2/credentials/") or path == "/v2/credentials":
            _, body = self.creds("ASIAPLANTEDECSKEY")
            body = {"RoleArn": "arn:aws:iam::%s:role/%s" % (ACCOUNT, role), **body}
            return self.send(200, json.dumps(body), "application/json")
        if path.rstrip("/") == "/v1/credentials":
            _, body = self.creds("ASIAPLANTEDEKSKEY")
            body["AccountId"] = ACCOUNT
            return self.send(200, json.dumps(body), "application/json")
        if path in ("/", ""):
            return self.send(200, "latest")
        if not path.startswith("/latest"):
            return self.send(404, "Not Found")

        token = self.headers.get("X-aws-ec2-metadata-token")
        if token is not None:
            with self.server.lock:
                known = token in self.server.tokens
            if not known:
                return self.send(401, "Unauthorized")
        elif self.server.v2_only:
            return self.send(401, "Unauthorized")

        now, c = self.creds("ASIAPLANTEDIMDSKEY")
        sc = "/latest/meta-data/iam/security-credentials"
        tree = {
            "/latest": "dynamic\nmeta-data\n",
            "/latest/meta-data": "\n".join([
                "ami-id", "hostname", "iam/", "instance-id", "instance-type",
                "local-hostname", "local-ipv4", "placement/", "services/",
            ]),
            "/latest/meta-data/ami-id": "ami-0planted0000000",
            "/latest/meta-data/hostname": "ip-172-31-0-10.%s.compute.internal" % REGION,
            "/latest/meta-data/local-hostname": "ip-172-31-0-10.%s.compute.internal" % REGION,
            "/latest/meta-data/local-ipv4": "172.31.0.10",
            "/latest/meta-data/instance-id": INSTANCE_ID,
            "/latest/meta-data/instance-type": "t3.micro",
            "/latest/meta-data/placement": "availability-zone\nregion",
            "/latest/meta-data/placement/availability-zone": ZONE,
            "/latest/meta-data/placement/region": REGION,
            "/latest/meta-data/services": "domain\npartition",
            "/latest/meta-data/services/domain": "amazonaws.com",
            "/latest/meta-data/services/partition": "aws",
            "/latest/meta-data/iam": "info\nsecurity-credentials/",
            "/latest/meta-data/iam/info": json.dumps({
                "Code": "Success",
                "LastUpdated": iso(now),
                "InstanceProfileArn": "arn:aws:iam::%s:instance-profile/%s" % (ACCOUNT, role),
                "InstanceProfileId": "AIPAPLANTEDIMDSPROFILE",
            }, indent=2),
            sc: role,
            sc + "/" + role: json.dumps({
                "Code": "Success",
                "LastUpdated": iso(now),
                "Type": "AWS-HMAC",
                **c,
            }, indent=2),
            "/latest/dynamic": "instance-identity/",
            "/latest/dynamic/instance-identity": "document",
            "/latest/dynamic/instance-identity/document": json.dumps({
                "accountId": ACCOUNT,
                "architecture": "x86_64",
                "availabilityZone": ZONE,
                "imageId": "ami-0planted0000000",
                "instanceId": INSTANCE_ID,
                "instanceType": "t3.micro",
                "privateIp": "172.31.0.10",
                "region": REGION,
                "version": "2017-09-30",
            }, indent=2),
        }
        key = path.rstrip("/") or "/"
        if key in tree:
            return self.send(200, tree[key])
        self.send(404, "Not Found")


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def server_bind(self):
        if self.address_family == socket.AF_INET6:
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()

    def note(self, h, status):
        line = "request client=%s server=%s method=%s path=%s status=%d token=%s authorization=%s\n" % (
            unmap(h.client_address[0]),
            unmap(h.connection.getsockname()[0]),
            h.command,
            h.path,
            status,
            "yes" if h.headers.get("X-aws-ec2-metadata-token") else "no",
            "yes" if h.headers.get("Authorization") else "no",
        )
        with self.lock:
            self.logf.write(line)
            self.logf.flush()


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--role", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--pidfile", required=True)
    p.add_argument("--port", type=int, default=80)
    p.add_argument("--v2-only", action="store_true")
    a = p.parse_args()

    try:
        Server.address_family = socket.AF_INET6
        srv = Server(("::", a.port), Handler)
    except OSError:  # no IPv6 in this namespace: IPv4 only
        Server.address_family = socket.AF_INET
        srv = Server(("0.0.0.0", a.port), Handler)
    srv.secret = os.environ.get("ECR_IMDS_SECRET") or "PLANTED-IMDS-SECRET-7f3c"
    srv.role, srv.v2_only = a.role, a.v2_only
    srv.tokens, srv.lock = set(), threading.Lock()
    srv.logf = open(a.log, "a", buffering=1)
    srv.logf.write("listening %s port %d pid %d\n" % (
        "[::] (dual-stack)" if srv.address_family == socket.AF_INET6 else "0.0.0.0",
        a.port, os.getpid()))
    with open(a.pidfile + ".tmp", "w") as f:
        f.write("%d\n" % os.getpid())
    os.rename(a.pidfile + ".tmp", a.pidfile)
    srv.serve_forever()


if __name__ == "__main__":
    sys.exit(main())
