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
    if _looks_like_name(token):
        raise TokenConfigError(
            f"{where}: the token looks like a user id or e-mail address, not a secret (it has an '@', or no digit "
            "and no capital letter); put the secret first, e.g. the output of "
            '`python -c "import secrets; print(secrets.token_urlsafe(32))"`'
        )


def _looks_like_name(token: str) -> bool:
    """Whether `token` reads like a name (an e-mail address, or lower-case words) rather than a random secret.

    Why: with the columns of a tokens file swapped, the guessable name would become the secret. A random token
    of 16+ characters from `secrets.token_urlsafe` or `token_hex` has a digit or a capital letter except with
    probability below 1e-3 (token_urlsafe(32): (38/64)**43 for neither), so a rare unlucky token is refused,
    never a name accepted.
    """
    return "@" in token or not any(character.isdigit() or character.isupper() for character in token)


def _check_user(user_id: str, where: str) -> None:
    if not _USER_ID.fullmatch(user_id):
        # A value as long as a token may be one (columns swapped): say so without showing it.
        shown = repr(user_id) if len(user_id) < MIN_TOKEN_CHARS else f"of {len(user_id)} characters (not shown)"
        raise TokenConfigError(
            f"{where}: user_id {shown} is invalid: use 1-128 characters of letters, digits, '_', '.', '@' or '-'"
            " (lines are 'token user_id': the token comes first)"
        )


def parse_tokens_file(text: str, source: str) -> list[tuple[str, str]]:
    """The `(token, user_id)` pairs of a tokens file's text, in file order.

    Each non-blank line is `token user_id`, separated by whitespace; `#` starts a comment at the start
    of a line or after whitespace. `source` names the file in error messages.

    Raises:
        TokenConfigError: a line has not exactly two fields, a token is shorter than `MIN_TOKEN_CHARS` or
            looks like a user id or e-mail address, a user_id is invalid, or a token appears twice. The
            message never contains a token (nor any field long enough to be one).
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
            TokenConfigError: the file cannot be read, is malformed or has no token, the single token is too
                short or looks like a name, or the single token repeats one in the file.
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
            from_file = parse_tokens_file(text, str(path))
            if not from_file:
                # An explicitly configured source that yields nothing must not silently turn auth off.
                raise TokenConfigError(
                    f"HARMONIA_AUTH_TOKENS_FILE {str(path)!r} has no token (only blank or comment lines): add "
                    "'token user_id' lines, or unset HARMONIA_AUTH_TOKENS_FILE to serve without tokens"
                )
            pairs += from_file
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
