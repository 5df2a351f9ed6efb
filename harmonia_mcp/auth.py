"""Bearer tokens for the HTTP transports: each token is bound to one `user_id`.

`TokenTable` is an `mcp.server.auth.provider.TokenVerifier`, so the SDK's own bearer middleware
(`BearerAuthBackend` + `RequireAuthMiddleware`) does the HTTP side: a missing or unknown token gets
401 with a `WWW-Authenticate: Bearer ...` header, and the accepted token reaches handlers through
`mcp.server.auth.middleware.auth_context.get_access_token()`. The principal we hand the SDK carries
the bound user in `subject` (and `client_id`), never the token itself.

Tokens come from `HARMONIA_AUTH_TOKENS_FILE` (lines of `token user_id`) and `HARMONIA_AUTH_TOKEN`
(one token for the default user). Nothing here ever puts a token in a log line or an error message.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import stat
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from mcp.server.auth.provider import AccessToken

from harmonia_mcp.config import Settings
from harmonia_mcp.models import USER_ID_PATTERN

logger = logging.getLogger(__name__)

# 16 characters is a floor against guessable tokens, not a strength guarantee; docs/remote.md
# recommends `python -c "import secrets; print(secrets.token_urlsafe(32))"` (43 characters).
MIN_TOKEN_CHARS = 16

_USER_ID = re.compile(USER_ID_PATTERN)
# '#' starts a comment at the start of a line or after whitespace; inside a token it is kept.
_COMMENT = re.compile(r"(^|\s)#.*$")


class TokenConfigError(ValueError):
    """The configured tokens cannot be used; the message says where (file and line) and why, never the token."""


@dataclass(frozen=True)
class _Entry:
    digest: bytes
    user_id: str


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


def _check_token(token: str, where: str) -> None:
    if len(token) < MIN_TOKEN_CHARS:
        raise TokenConfigError(
            f"{where}: the token is {len(token)} characters; use at least {MIN_TOKEN_CHARS}, e.g. the output of "
            '`python -c "import secrets; print(secrets.token_urlsafe(32))"`'
        )
    if any(character.isspace() for character in token):
        raise TokenConfigError(f"{where}: the token contains whitespace; tokens are one word")


def _check_user(user_id: str, where: str) -> None:
    if not _USER_ID.fullmatch(user_id):  # match would let "alice\n" through
        raise TokenConfigError(
            f"{where}: user_id {user_id[:140]!r} is invalid: "
            "use 1-128 characters of letters, digits, '_', '.', '@' or '-'"
        )


def parse_tokens_file(text: str, source: str) -> list[tuple[str, str]]:
    """The `(token, user_id)` pairs of a tokens file's text, in file order.

    Each non-blank line is `token user_id`, separated by whitespace; `#` starts a comment at the start
    of a line or after whitespace. `source` names the file in error messages.

    Raises:
        TokenConfigError: a line has not exactly two fields, a token is shorter than `MIN_TOKEN_CHARS`,
            a user_id is invalid, or a token appears twice.
    """
    pairs: list[tuple[str, str]] = []
    seen: dict[bytes, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        fields = _COMMENT.sub("", raw).split()
        if not fields:
            continue
        where = f"{source} line {number}"
        if len(fields) != 2:
            raise TokenConfigError(f"{where}: expected 'token user_id' (two fields), found {len(fields)} fields")
        token, user_id = fields
        _check_token(token, where)
        _check_user(user_id, where)
        digest = _digest(token)
        if digest in seen:
            raise TokenConfigError(f"{where}: repeats the token of line {seen[digest]}; each token names one user")
        seen[digest] = number
        pairs.append((token, user_id))
    return pairs


class TokenTable:
    """Bearer tokens and the user each may act as; an `mcp` `TokenVerifier`.

    Only SHA-256 digests of the tokens are kept. `verify_token` hashes the presented token and compares
    it with every digest using `hmac.compare_digest`, without stopping at a match, so the time taken
    tells neither how much of a token was right nor which entry matched.
    """

    def __init__(self, pairs: Iterable[tuple[str, str]]) -> None:
        self._entries = tuple(_Entry(_digest(token), user_id) for token, user_id in pairs)

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def users(self) -> list[str]:
        """The distinct users the tokens are bound to, sorted."""
        return sorted({entry.user_id for entry in self._entries})

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenTable | None:
        """The tokens `settings` configure (file and single token together), or None when there are none.

        Raises:
            TokenConfigError: the file cannot be read or is malformed, the single token is too short,
                or the single token repeats one in the file.
        """
        pairs: list[tuple[str, str]] = []
        if settings.auth_tokens_file:
            path = Path(settings.auth_tokens_file).expanduser()
            try:
                text = path.read_text(encoding="utf-8")
                mode = path.stat().st_mode
            except (OSError, UnicodeDecodeError) as error:
                raise TokenConfigError(f"HARMONIA_AUTH_TOKENS_FILE {str(path)!r} cannot be read: {error}") from error
            if mode & (stat.S_IRWXG | stat.S_IRWXO):
                logger.warning("%s is readable by other users; `chmod 600` it", path)
            pairs += parse_tokens_file(text, str(path))
        if settings.auth_token is not None:
            token = settings.auth_token.get_secret_value()
            _check_token(token, "HARMONIA_AUTH_TOKEN")
            if any(hmac.compare_digest(_digest(token), _digest(other)) for other, _ in pairs):
                raise TokenConfigError("HARMONIA_AUTH_TOKEN repeats a token of HARMONIA_AUTH_TOKENS_FILE")
            pairs.append((token, settings.default_user))
        return cls(pairs) if pairs else None

    async def verify_token(self, token: str) -> AccessToken | None:
        """The principal `token` authenticates (its user in `subject` and `client_id`), or None if unknown."""
        digest = _digest(token)
        found: _Entry | None = None
        for entry in self._entries:
            if hmac.compare_digest(entry.digest, digest):
                found = entry
        if found is None:
            return None
        # `token` holds a short fingerprint, not the secret: AccessToken objects can end up in reprs and logs.
        return AccessToken(
            token=f"sha256:{digest.hex()[:12]}", client_id=found.user_id, subject=found.user_id, scopes=[]
        )
