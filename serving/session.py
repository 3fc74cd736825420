"""Sign-in for the page of a token-protected service: a browser cannot send ``Authorization: Bearer``, so
the page's form exchanges the token for a session cookie accepted beside the header.

``Sessions(token, hours)``: ``check_token`` compares in constant time; ``issue`` signs a new random
session id (itsdangerous, keyed by a digest of the token: rotating the token signs every session out,
a restart does not); ``valid`` accepts a cookie whose signature holds, younger than ``hours`` and not
signed out; ``revoke`` signs one out (remembered in memory until it would have expired anyway). The
cookie is ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no other site's page sends it) and
``Secure`` when served over HTTPS. ``same_origin`` refuses a request another site's page made (by
``Sec-Fetch-Site``, else ``Origin``): state-changing requests authenticated by the cookie and the sign-in
form itself must come from the page. The token never appears in a URL, a cookie or a log.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

COOKIE = "mmp_session"


class Sessions:
    def __init__(self, token: str, hours: float):
        from itsdangerous import URLSafeTimedSerializer

        self._token = token.encode()
        key = hashlib.sha256(b"mmpipe page session\0" + self._token).digest()
        self._signer = URLSafeTimedSerializer(key, salt="mmp-session")
        self.max_age = int(hours * 3600)
        self._revoked: dict[str, float] = {}  # session id -> when it expires anyway

    def check_token(self, given: str) -> bool:
        return hmac.compare_digest(given.encode(), self._token)

    def issue(self) -> str:
        return self._signer.dumps({"sid": secrets.token_urlsafe(16)})

    def _sid(self, cookie: str | None) -> str | None:
        from itsdangerous import BadSignature

        if not cookie:
            return None
        try:
            data = self._signer.loads(cookie, max_age=self.max_age)  # SignatureExpired is a BadSignature
        except BadSignature:
            return None
        sid = data.get("sid") if isinstance(data, dict) else None
        return sid if isinstance(sid, str) and sid not in self._revoked else None

    def valid(self, cookie: str | None) -> bool:
        return self._sid(cookie) is not None

    def revoke(self, cookie: str | None) -> None:
        sid = self._sid(cookie)
        now = time.time()
        self._revoked = {s: t for s, t in self._revoked.items() if t > now}
        if sid is not None:
            self._revoked[sid] = now + self.max_age


def same_origin(request) -> bool:
    """False when a browser says the request comes from another site's page. Clients that are not
    browsers send neither header (and cannot carry the page's cookie anyway)."""
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None:
        return True
    host = request.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


def set_cookie(response, request, value: str, max_age: int) -> None:
    response.set_cookie(COOKIE, value, max_age=max_age, path="/", httponly=True, samesite="strict",
                        secure=request.url.scheme == "https")
