#!/usr/bin/env python3
"""The quickstart's "private application": a tiny HTTP server on loopback that answers with
what it received, so you can see what crossed the tunnel. Writes its port to argv[1]."""
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def _answer(self):
        length = int(self.headers.get("content-length") or 0)
        body = self.rfile.read(length) if length else b""
        reply = json.dumps(
            {
                "message": "hello from the private app",
                "method": self.command,
                "path": self.path,
                "body_bytes": len(body),
                "x_forwarded_for": self.headers.get("x-forwarded-for"),
                "request_id": self.headers.get("x-request-id"),
            },
            indent=2,
        ).encode() + b"\n"
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    do_GET = do_POST = do_PUT = do_DELETE = _answer

    def log_message(self, fmt, *args):
        sys.stderr.write("app: " + fmt % args + "\n")


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(sys.argv[1], "w") as f:
    f.write(str(server.server_address[1]))
server.serve_forever()
