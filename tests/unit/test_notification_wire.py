"""What the Notification service puts on the wire: the email it writes (read back by the
standard library's parser) and the Web Push body it encrypts (decrypted by ``http_ece``,
the reference the push sink and browsers agree with)."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import os

import http_ece
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from servers.notification.channels import Permanent, encrypt_push, mime_bytes


def _mail(**kw: str) -> email.message.EmailMessage:
    args = {"sender": "foodmesh <no-reply@foodmesh.test>", "to": "c1@example.com",
            "subject": "Confirmed", "text": "Your order.", "html": "",
            "message_id": "<d_1@foodmesh>", "notification_id": "n_1", **kw}  # fmt: skip
    msg = email.message_from_bytes(mime_bytes(**args), policy=email.policy.default)
    assert isinstance(msg, email.message.EmailMessage)
    return msg


def test_an_email_with_html_reads_back_as_its_alternatives() -> None:
    msg = _mail(subject="Luigi’s <Pizza> is confirmed", text="Héllo\n. a dot line",
                html="<p>Luigi&#x27;s &lt;Pizza&gt;</p>")  # fmt: skip
    assert msg["Subject"] == "Luigi’s <Pizza> is confirmed"
    assert msg["Message-ID"] == "<d_1@foodmesh>"
    assert msg["X-Foodmesh-Notification"] == "n_1"
    assert msg["To"] == "c1@example.com"
    named = _mail(sender="Café Luigi <no-reply@foodmesh.test>")["From"]
    assert named.addresses[0].display_name == "Café Luigi"
    assert named.addresses[0].addr_spec == "no-reply@foodmesh.test"
    assert msg.get_content_type() == "multipart/alternative"
    plain, html = msg.get_body(("plain",)), msg.get_body(("html",))
    assert plain is not None and html is not None
    assert plain.get_content() == "Héllo\n. a dot line"
    assert html.get_content() == "<p>Luigi&#x27;s &lt;Pizza&gt;</p>"


def test_a_plain_email_is_one_part_and_a_value_cannot_add_a_header() -> None:
    msg = _mail(subject="Hi\r\nBcc: evil@example.com", text="only text")
    assert msg.get_content_type() == "text/plain"
    assert msg.get_content() == "only text"
    assert msg["Bcc"] is None
    assert "evil@example.com" in msg["Subject"]  # kept as words of the subject


def _browser() -> tuple[ec.EllipticCurvePrivateKey, str, bytes, str]:
    key = ec.generate_private_key(ec.SECP256R1())
    raw = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    secret = os.urandom(16)
    b64 = base64.urlsafe_b64encode
    return key, b64(raw).rstrip(b"=").decode(), secret, b64(secret).rstrip(b"=").decode()


def test_a_push_body_decrypts_with_the_browsers_keys_only() -> None:
    key, p256dh, secret, auth = _browser()
    data = json.dumps({"notification_id": "n_1", "title": "Confirmed"}).encode()
    bodies = [encrypt_push(data, p256dh, auth) for _ in range(2)]
    assert bodies[0] != bodies[1]  # a fresh key and salt per push
    for body in bodies:
        assert http_ece.decrypt(body, private_key=key, auth_secret=secret,
                                version="aes128gcm") == data  # fmt: skip
    other, _, _, _ = _browser()
    with pytest.raises(Exception):  # noqa: B017,PT011 - any failure to decrypt
        http_ece.decrypt(bodies[0], private_key=other, auth_secret=secret, version="aes128gcm")


def test_a_push_too_large_for_one_record_is_refused_for_good() -> None:
    _, p256dh, _, auth = _browser()
    with pytest.raises(Permanent):
        encrypt_push(b"x" * 4080, p256dh, auth)
    with pytest.raises(Exception):  # noqa: B017,PT011 - not a key on the curve
        encrypt_push(b"{}", base64.urlsafe_b64encode(b"\x04" + b"\x01" * 64).decode(), auth)
