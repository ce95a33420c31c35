"""What the consumer sees: the payment page at `redirect_url` (a button per thing a consumer can do)
and an image at `qr_code_url`."""

from __future__ import annotations

import html
from typing import Any

# What a consumer can do on the page (MANUAL_ID_CHECK: an in-store identity check, not final); the
# control API also accepts statuses Klarna may add later.
CONSUMER_ACTIONS = ("IN_PROGRESS", "MANUAL_ID_CHECK", "FAILED", "BACK", "ERROR", "CANCELLED", "COMPLETED")


def payment_page(body: dict[str, Any]) -> str:
    """The consumer's page: the session's state and a button per thing a consumer can do."""
    buttons = "".join(
        f'<button name="action" value="{action}">{action.replace("_", " ").title()}</button> '
        for action in CONSUMER_ACTIONS
    )
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>Klarna HPP simulator</title></head><body>"
        f"<h1>Pay with Klarna (simulated)</h1><p>Session <code>{html.escape(body['session_id'])}</code>: "
        f"<strong>{html.escape(body['status'])}</strong>, updated {html.escape(body['updated_at'])}, "
        f"expires {html.escape(body['expires_at'])}.</p>"
        f"<form method='post'>{buttons}</form></body></html>"
    )


def qr_placeholder(target: str) -> bytes:
    """An image standing in for the QR code (a real one needs an encoder this simulator does without)."""
    text = html.escape(target)
    return (
        "<svg xmlns='http://www.w3.org/2000/svg' width='320' height='80'>"
        "<rect width='320' height='80' fill='white' stroke='black'/>"
        f"<text x='8' y='30' font-size='12'>QR code for</text><text x='8' y='55' font-size='9'>{text}</text>"
        "</svg>"
    ).encode()
