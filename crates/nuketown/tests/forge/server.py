"""A GitHub-like forge over HTTPS: git's smart HTTP (through the real
`git http-backend`) and a small JSON API, both refusing any request that
does not carry the forge's token the way GitHub takes it (HTTP Basic,
user `x-access-token`). The credential-gateway tests' upstream for git
over HTTPS and API calls; every request is logged with whether it carried
the token.

Usage: python3 server.py REPOS_DIR CERT KEY TOKEN PORT_FILE LOG
"""

import base64
import http.server
import json
import os
import ssl
import subprocess
import sys
import threading

repos, cert, key, token, port_file, log_path = sys.argv[1:7]
want = "Basic " + base64.b64encode(f"x-access-token:{token}".encode()).decode()
lock = threading.Lock()


def log(entry):
    with lock:
        with open(log_path, "a") as f:
            f.write(json.dumps(entry) + "\n")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def reply(self, status, body, ctype="application/json", extra=()):
        data = body if isinstance(body, bytes) else body.encode()
        self.send_response(status)
        self.send_header("content-type", ctype)
        self.send_header("content-length", str(len(data)))
        for k, v in extra:
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def handle_any(self):
        auth = self.headers.get("authorization", "")
        ok = auth == want
        log({"method": self.command, "path": self.path, "host": self.headers.get("host"),
             "token": ok, "authorization": auth})
        n = int(self.headers.get("content-length", 0) or 0)
        body = self.rfile.read(n) if n else b""
        if self.headers.get("transfer-encoding", "").lower() == "chunked":
            body = self.read_chunked()
        if not ok:
            return self.reply(401, json.dumps({"message": "Bad credentials"}),
                              extra=[("www-authenticate", 'Basic realm="forge"')])
        path = self.path.split("?")[0]
        if path == "/api/user":
            return self.reply(200, json.dumps({"login": "forge-bot", "token_seen": True}))
        return self.git(body)

    def read_chunked(self):
        out = b""
        while True:
            size = int(self.rfile.readline().strip() or b"0", 16)
            if size == 0:
                self.rfile.readline()
                return out
            out += self.rfile.read(size)
            self.rfile.readline()

    def git(self, body):
        path, _, query = self.path.partition("?")
        env = dict(os.environ, GIT_PROJECT_ROOT=repos, GIT_HTTP_EXPORT_ALL="1",
                   PATH_INFO=path, QUERY_STRING=query, REQUEST_METHOD=self.command,
                   CONTENT_TYPE=self.headers.get("content-type", ""),
                   CONTENT_LENGTH=str(len(body)), REMOTE_USER="x-access-token",
                   REMOTE_ADDR="127.0.0.1", GIT_HTTP_MAX_REQUEST_BUFFER="100M")
        if self.headers.get("content-encoding") == "gzip":
            import gzip
            body = gzip.decompress(body)
            env["CONTENT_LENGTH"] = str(len(body))
        out = subprocess.run(["git", "http-backend"], input=body, env=env,
                             capture_output=True).stdout
        head, _, rest = out.partition(b"\r\n\r\n")
        if not _:
            head, _, rest = out.partition(b"\n\n")
        status, headers = 200, []
        for line in head.decode(errors="replace").splitlines():
            k, _, v = line.partition(":")
            if k.lower() == "status":
                status = int(v.strip().split()[0])
            elif k:
                headers.append((k.strip(), v.strip()))
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("content-length", str(len(rest)))
        self.end_headers()
        self.wfile.write(rest)

    do_GET = handle_any
    do_POST = handle_any


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain(cert, key)
server.socket = ctx.wrap_socket(server.socket, server_side=True)
with open(port_file + ".tmp", "w") as f:
    f.write(str(server.server_address[1]))
os.rename(port_file + ".tmp", port_file)
server.serve_forever()
