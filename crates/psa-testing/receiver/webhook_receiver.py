"""The tests' webhook receiver: a real HTTP server on loopback that verifies every delivery's
signature with the Standard Webhooks reference library (PyPI `standardwebhooks`, not psa's
code), records it and answers as the test tells it.

    python webhook_receiver.py DIR PORT

DIR holds `secret` (the endpoint's whsec_ secrets, one per line: a delivery verifies if any
does), `fail_first` (answer 500 to the first N attempts of each webhook-id; default 0), and
`delay` (seconds to wait before answering; default 0), and
receives `received.jsonl`: one line per request (id, attempt, verified, status, body, headers).
"""

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook, WebhookVerificationError

DIR = sys.argv[1]
PORT = int(sys.argv[2])
attempts = {}
lock = threading.Lock()


def read(name, default=""):
    try:
        with open(os.path.join(DIR, name)) as f:
            return f.read()
    except FileNotFoundError:
        return default


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {k.lower(): v for k, v in self.headers.items()}
        verified = False
        for secret in read("secret").split():
            try:
                Webhook(secret).verify(body, headers)
                verified = True
                break
            except WebhookVerificationError:
                pass
        msg_id = headers.get("webhook-id", "")
        with lock:
            n = attempts.get(msg_id, 0) + 1
            attempts[msg_id] = n
            fail_first = int(read("fail_first", "0").strip() or "0")
            status = 400 if not verified else (500 if n <= fail_first else 200)
            try:
                parsed = json.loads(body)
            except ValueError:
                parsed = None
            record = {"id": msg_id, "attempt": n, "verified": verified, "status": status,
                      "body": parsed, "headers": headers}
            with open(os.path.join(DIR, "received.jsonl"), "a") as f:
                f.write(json.dumps(record) + "\n")
                f.flush()
        delay = float(read("delay", "0").strip() or "0")
        if delay:
            time.sleep(delay)
        reply = b"ok" if status == 200 else b"not this time" * 100
        self.send_response(status)
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
