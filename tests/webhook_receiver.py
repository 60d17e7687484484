"""A webhook receiver for the end-to-end tests: every POST is verified with the `standardwebhooks`
package (an implementation Rapport did not write), and reported on stdout as one JSON line.

It prints `LISTENING <port>` once it listens, then reads the endpoint's `whsec_` secret as the
first line of stdin (the test learns it only after registering this receiver's URL), and exits
when stdin closes. Until the secret arrives, and for the first `--fail-first` verified requests,
it answers 503 (reported as `unready` and `failed`); a request whose signature does not verify gets 401.
With `--delay`, it waits that many seconds before answering a verified request.
"""

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

state = {"webhook": None, "verified": 0}
lock = threading.Lock()


def report(**fields):
    with lock:
        print(json.dumps(fields), flush=True)


class Handler(BaseHTTPRequestHandler):
    fail_first = 0
    delay = 0.0

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {name.lower(): value for name, value in self.headers.items()}
        with lock:
            webhook = state["webhook"]
        if webhook is None:
            report(outcome="unready", id=headers.get("webhook-id"))
            return self.answer(503)
        try:
            webhook.verify(body, headers)
        except WebhookVerificationError as error:
            report(outcome="rejected", id=headers.get("webhook-id"), reason=str(error))
            return self.answer(401)
        with lock:
            state["verified"] += 1
            failing = state["verified"] <= self.fail_first
        time.sleep(self.delay)
        if failing:
            report(outcome="failed", id=headers["webhook-id"])
            return self.answer(503)
        report(outcome="delivered", id=headers["webhook-id"], body=json.loads(body))
        self.answer(204)

    def answer(self, status):
        self.send_response(status)
        self.send_header("content-length", "0")
        self.end_headers()

    def log_message(self, *args):
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fail-first", type=int, default=0, help="answer 503 to this many verified requests")
    parser.add_argument("--delay", type=float, default=0.0, help="seconds to wait before answering a verified request")
    args = parser.parse_args()
    Handler.fail_first = args.fail_first
    Handler.delay = args.delay
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    print(f"LISTENING {server.server_address[1]}", flush=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    secret = sys.stdin.readline().strip()
    if secret:
        with lock:
            state["webhook"] = Webhook(secret)
    sys.stdin.read()
    server.shutdown()


if __name__ == "__main__":
    main()
