"""Signs a body from stdin as a Standard Webhooks sender would, with the `standardwebhooks`
package: prints the `webhook-signature` header for the given secret, id and timestamp."""

import sys
from datetime import datetime, timezone

from standardwebhooks.webhooks import Webhook

secret, message_id, timestamp = sys.argv[1:4]
body = sys.stdin.buffer.read().decode("utf-8")
print(Webhook(secret).sign(message_id, datetime.fromtimestamp(int(timestamp), tz=timezone.utc), body))
